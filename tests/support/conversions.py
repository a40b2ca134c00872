"""A conversions.valid record for tests of what is made from it (its diagnostics fact)."""

from __future__ import annotations

from typing import Any

ACCOUNT = "549755885175"
KEY = f"{ACCOUNT}:checkout:ev-1:online"


def valid_conversion(**fields: Any) -> dict[str, Any]:
    """One conversions.valid message of ``ACCOUNT`` (email only), ``fields`` replacing its own."""
    return {
        "conversion_key": KEY,
        "ad_account_id": ACCOUNT,
        "source": "api",
        "received_at_ms": 1_764_151_200_000,
        "raw_ref": "conversions.raw:0:1",
        "event_name": "checkout",
        "event_time": 1_764_151_000,
        "ids": {"em": ["h"]},
        **fields,
    }
