"""JSON codecs (orjson). Topics carry raw bytes; decoding happens in our code
so that a bad record becomes a dead-letter entry instead of a crashed agent
(ingest's envelope decoding is in services/ingest/logic.py)."""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(raw)


def key_bytes(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode("utf-8")
