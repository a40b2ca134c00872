"""A member set (a report row, a modeled stratum) kept in a dict, for pure tests of
``services.aggregate.rules.on_delta``: the rows agent keeps the same in two tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.aggregate import rules


def apply(
    members: dict[str, Any],
    totals: Any,
    delta: dict[str, Any],
    now_ms: int,
    member_of: Callable[[int, dict[str, Any]], Any],
) -> bool:
    """One delta to ``members`` and ``totals``; whether it changed anything."""
    key = delta["conversion_key"]
    member = rules.on_delta(members.get(key), totals, delta, now_ms, member_of)
    if member is None:
        return False
    members[key] = member
    return True
