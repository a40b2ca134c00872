"""A conversions.attributed record for unit tests of what is made from it."""

from __future__ import annotations

from typing import Any

#: 2025-11-26 UTC
EVENT_TIME = 1_764_151_000


def attributed_record(
    key: str = "k",
    version: int = 1,
    status: str = "attributed",
    ad: str = "a1",
    value: float | None = 10.5,
    user: str | None = "p-1",
) -> dict[str, Any]:
    """Ad account "1", click on campaign c1 / ad group g1 / ``ad`` when attributed."""
    touch = None
    if status == "attributed":
        touch = {
            "engagement_id": "e",
            "campaign_id": "c1",
            "ad_group_id": "g1",
            "ad_id": ad,
            "type": "click",
            "ts_ms": 0,
        }
    return {
        "conversion_key": key,
        "ad_account_id": "1",
        "event_name": "checkout",
        "action_source": "web",
        "match": {"key_type": "em", "user": user} if status != "unidentified" else None,
        "unidentified_reason": "no_identifier" if status == "unidentified" else None,
        "event_time": EVENT_TIME,
        "status": status,
        "touch": touch,
        "version": version,
        "value": value,
        "currency": "USD",
    }
