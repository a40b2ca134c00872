"""Decoding and checking of the onsite inputs: engagements, signals, privacy requests.

Engagements and identity signals come from other onsite systems; a record
that does not fit the contract is rejected with a stable reason code instead
of stopping the service.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

from shared.contract.errors import InvalidEvent

KEY_TYPES = frozenset({"em", "ph", "hashed_maid", "external_id", "ip_ua"})
ENGAGEMENT_TYPES = frozenset({"click", "engagement", "view"})
PRIVACY_KINDS = ("delete", "opt_out", "opt_in")


def _object(raw: bytes | None) -> dict[str, Any]:
    try:
        value = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        raise InvalidEvent("invalid_json", "the record is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise InvalidEvent("not_an_object", "the record is not a JSON object")
    return value


def _require(value: dict[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    item = value.get(field)
    if not isinstance(item, kind) or isinstance(item, bool) or item == "":
        raise InvalidEvent(f"invalid_{field}", f"'{field}' is missing or has the wrong type")
    return item


def _one_of(value: dict[str, Any], field: str, allowed: Collection[str], message: str) -> str:
    # Checked as a string first: a list or an object in the field is hostile
    # input, and `unhashable in frozenset` would raise TypeError, not a reason.
    item = value.get(field)
    if not isinstance(item, str) or item not in allowed:
        raise InvalidEvent(f"invalid_{field}", message)
    return item


def decode_signal(raw: bytes | None) -> dict[str, Any]:
    signal = _object(raw)
    _require(signal, "user_id", str)
    _require(signal, "key", str)
    _require(signal, "ts_ms", int)
    _one_of(signal, "key_type", KEY_TYPES, f"'key_type' must be one of {sorted(KEY_TYPES)}")
    _one_of(signal, "op", ("link", "unlink"), "'op' must be link or unlink")
    if signal["key_type"] == "external_id" and not isinstance(signal.get("ad_account_id"), str):
        raise InvalidEvent("invalid_ad_account_id", "an external_id signal needs its ad_account_id")
    return signal


def decode_engagement(raw: bytes | None) -> dict[str, Any]:
    eng = _object(raw)
    _require(eng, "engagement_id", str)
    _require(eng, "user_id", str)
    _require(eng, "ad_account_id", str)
    _require(eng, "ts_ms", int)
    _one_of(eng, "type", ENGAGEMENT_TYPES, f"'type' must be one of {sorted(ENGAGEMENT_TYPES)}")
    return eng


def decode_privacy_request(raw: bytes | None) -> dict[str, Any]:
    request = _object(raw)
    _require(request, "user_id", str)
    _require(request, "ts_ms", int)
    _one_of(request, "kind", PRIVACY_KINDS, "'kind' must be delete, opt_out or opt_in")
    return request
