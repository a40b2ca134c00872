"""A minimal valid Conversions API event, shared by the ingest tests."""

from __future__ import annotations

from typing import Any

RECEIVED_MS = 1_764_151_200_000
EVENT_TIME = 1_764_151_000


def event(*, em: str = "a" * 64, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": EVENT_TIME,
        "event_id": "ev-1",
        "user_data": {"em": [em]},
    }
    base.update(overrides)
    return base
