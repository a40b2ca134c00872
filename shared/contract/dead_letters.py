"""Dead-letter records for inputs a service cannot use (contract shape)."""

from __future__ import annotations

from typing import Any

MAX_RAW_CHARS = 10_000


def dlq_record(
    reason: str, message: str, kafka_message: Any, ad_account_id: str | None, raw_text: str
) -> dict[str, Any]:
    """A conversions.dlq value. ``raw_text`` must already be redacted by the caller."""
    return {
        "reason": reason,
        "message": message,
        "source_topic": kafka_message.topic,
        "partition": kafka_message.partition,
        "offset": kafka_message.offset,
        "ad_account_id": ad_account_id,
        "raw": raw_text[:MAX_RAW_CHARS],
    }


def raw_as_text(value: bytes | None) -> str:
    if value is None:
        return ""
    return value[:MAX_RAW_CHARS].decode("utf-8", "replace")
