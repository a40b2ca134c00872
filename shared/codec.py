"""JSON codecs (orjson). Topics carry raw bytes; decoding happens in our code
so that a bad record becomes a dead-letter entry instead of a crashed agent."""

from __future__ import annotations

from typing import Any

import orjson

from shared.errors import InvalidEvent


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(raw)


def decode_object(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Decode one record value that must be a JSON object, or raise InvalidEvent."""
    if raw is None:
        raise InvalidEvent("empty_record", "the record has no value")
    if len(raw) > max_bytes:
        raise InvalidEvent("record_too_large", f"the record is {len(raw)} bytes (max {max_bytes})")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidEvent("invalid_json", "the record is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise InvalidEvent("not_an_object", "the record is not a JSON object")
    return value


def key_bytes(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode("utf-8")
