"""The one builder of ``conversions.dlq`` records (contract shape), for every service.

Every service dead-letters through :func:`dead_letter`: ingest for the
conversions it rejects, every other agent through
``shared.runtime.batching.Outbox.dead_letter``. The builder redacts ``raw``
itself (``shared.contract.redaction``), so no caller can forget to: the DLQ
holds no plaintext identifier and never the user id of a user-keyed input.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from shared.contract.redaction import MAX_RAW_CHARS, REDACTED, UNPARSED, redact_raw

__all__ = [
    "MAX_RAW_CHARS",
    "REDACTED",
    "UNPARSED",
    "ad_account_of",
    "dead_letter",
    "dead_letter_of_record",
]

_AD_ACCOUNT_ID = re.compile(r"[0-9]{1,18}").fullmatch
#: Larger records are redacted as text (and never parsed twice).
MAX_PARSED_BYTES = 1_000_000


def dead_letter(
    reason: str,
    message: str,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    raw: bytes | None,
    ad_account_id: str | None = None,
    parsed: Any = UNPARSED,
) -> dict[str, Any]:
    """A conversions.dlq value: ``raw`` is the input redacted and cut to ``MAX_RAW_CHARS``.

    ``parsed`` is the input already decoded, when the caller has it (spares a
    second parse). ``message`` must be the caller's own text, never input.
    """
    return {
        "reason": reason,
        "message": message,
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "ad_account_id": ad_account_id,
        "raw": redact_raw(raw, parsed),
    }


def dead_letter_of_record(
    reason: str, message: str, *, source_topic: str, partition: int, offset: int, raw: bytes | None
) -> dict[str, Any]:
    """:func:`dead_letter` of a record nothing has parsed yet (the other services).

    ``ad_account_id`` is the record's own top-level one when it holds a valid one.
    """
    parsed = _parse(raw)
    return dead_letter(
        reason,
        message,
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        raw=raw,
        ad_account_id=ad_account_of(parsed),
        parsed=parsed,
    )


def ad_account_of(parsed: Any) -> str | None:
    """The top-level ``ad_account_id`` of a decoded JSON record, when it is a valid one."""
    account = parsed.get("ad_account_id") if isinstance(parsed, dict) else None
    return account if isinstance(account, str) and _AD_ACCOUNT_ID(account) else None


def _parse(raw: bytes | None) -> Any:
    if raw is None or len(raw) > MAX_PARSED_BYTES:
        return UNPARSED
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return UNPARSED
