"""Dead-letter text of attribute's user-keyed inputs, without user ids.

User ids leave the pipeline only as pseudonyms: a record of ads.engagements,
privacy.requests or attribution.assignments (all keyed by user_id) goes to
conversions.dlq without the user id, neither its key nor in its text.
"""

from __future__ import annotations

from typing import Any

import orjson

REDACTED = "[redacted]"
NOT_SHOWN = "[not shown: a user-keyed input that is not a JSON object]"


def text_without_user_ids(value: bytes | None, key: bytes | None) -> str:
    """A user-keyed input as DLQ text: user ids leave the pipeline only as pseudonyms.

    In a JSON object the ``user_id`` field, and any string holding the
    record's key or that user_id, become ``"[redacted]"``; anything else
    cannot be searched reliably and is not shown.
    """
    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return NOT_SHOWN
    if not isinstance(doc, dict):
        return NOT_SHOWN
    user_ids = {key.decode("utf-8", "replace")} if key else set()
    if isinstance(doc.get("user_id"), str) and doc["user_id"]:
        user_ids.add(doc["user_id"])
    doc = {k: REDACTED if k == "user_id" else v for k, v in doc.items()}
    return orjson.dumps(_redact(doc, user_ids)).decode()


def _redact(value: Any, user_ids: set[str]) -> Any:
    if isinstance(value, str):
        return REDACTED if any(uid and uid in value for uid in user_ids) else value
    if isinstance(value, list):
        return [_redact(item, user_ids) for item in value]
    if isinstance(value, dict):
        return {_redact(k, user_ids): _redact(v, user_ids) for k, v in value.items()}
    return value
