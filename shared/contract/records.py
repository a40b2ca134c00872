"""The `conversions.attributed` record, built in one place for every producer."""

from __future__ import annotations

from typing import Any, NamedTuple


class Send(NamedTuple):
    """One output of a rule: a record for a registry topic (the agent sends it).

    ``value`` is JSON-able, or bytes sent as they are.
    """

    topic: str
    key: str | bytes | None
    value: Any


def attributed_record(
    conversion_key: str,
    conv: dict[str, Any],
    *,
    status: str,
    reason: str | None,
    match: dict[str, Any] | None,
    touch: dict[str, Any] | None,
    version: int,
    processed_at_ms: int,
) -> dict[str, Any]:
    return {
        "conversion_key": conversion_key,
        "ad_account_id": conv["ad_account_id"],
        "event_id": conv["event_id"],
        "event_name": conv["event_name"],
        "action_source": conv["action_source"],
        "source": conv["source"],
        "event_time": conv["event_time"],
        "value": conv.get("value"),
        "currency": conv.get("currency"),
        "status": status,
        "unidentified_reason": reason,
        "match": match,
        "touch": touch,
        "version": version,
        "processed_at_ms": processed_at_ms,
    }
