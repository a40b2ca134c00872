"""Report rows, exact under redelivery and re-attribution (pure rules).

attribute's publisher sends, with every new version of a conversion's result,
the deltas it makes to the reports (``shared.contract.report_deltas``): leave
the old row (``remove``), join the new one (``add``), keyed by ad account.
Here, per **row**: its *members*, i.e. which conversion (at which version,
with which value) it holds, one key each, and its totals (``RowTotals``),
moved from a member's old part to its new one by each delta that applies
(``on_delta``). Deciding by the member's version makes every delta
idempotent: a delta replayed after a crash changes nothing, and an old delta
cannot undo a newer one. ``publish_row`` is the row's reports.conversions
record (once per batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from services.aggregate.state import RowMember, RowTotals
from shared.contract import versions
from shared.contract.records import Send
from shared.contract.report_deltas import row_from_key

REPORTS = "reports.conversions"


class Member(Protocol):
    @property
    def version(self) -> int: ...


M = TypeVar("M", bound=Member)
M_in = TypeVar("M_in", bound=Member, contravariant=True)


class Totals(Protocol[M_in]):
    version: int

    def count(self, member: M_in | None, sign: int) -> None: ...


def on_delta(
    current: M | None,
    totals: Totals[M],
    delta: dict[str, Any],
    now_ms: int,
    member_of: Callable[[int, dict[str, Any]], M],
) -> M | None:
    """One delta to a member set (a row, a stratum): the conversion's new member, with
    the totals moved from its old part to the new one and a new version; None when
    the delta changes nothing (not newer than the member: applied already, or older)."""
    version = int(delta["version"])
    if current is not None and current.version >= version:
        return None
    member = member_of(version, delta)
    totals.count(current, -1)
    totals.count(member, 1)
    totals.version = versions.next_stamp(totals.version, now_ms)
    return member


def row_member(version: int, delta: dict[str, Any]) -> RowMember:
    """A row's member as a delta makes it (a removal keeps only its version)."""
    if delta["op"] == "add":
        return RowMember(version, True, delta.get("value"), delta.get("currency"))
    return RowMember(version, False)


def summarise(key: str, totals: RowTotals) -> dict[str, Any] | None:
    """The reports.conversions value of a row, or None when it holds no conversion."""
    if totals.conversions <= 0:
        return None
    return {
        **row_from_key(key),
        "conversions": totals.conversions,
        "value": {cur: float(total) for cur, (_held, total) in sorted(totals.sums.items())},
        "version": totals.version,
    }


def publish_row(key: str, totals: RowTotals) -> Send:
    """The row's reports.conversions record (a tombstone when it emptied)."""
    return Send(REPORTS, key, summarise(key, totals))
