"""Report rows, exact under redelivery and re-attribution (pure rules).

attribute's publisher sends, with every new version of a conversion's result,
the deltas it makes to the reports (``shared.contract.report_deltas``): leave
the old row (``remove``), join the new one (``add``), keyed by ad account.
Here, per **row** (``on_delta``): the row's *members*, i.e. which conversion
(at which version, with which value) it holds. Counting members instead of
adding increments makes every delta idempotent: a delta replayed after a
crash changes nothing, and an old delta cannot undo a newer one.
``publish_row`` is the row's reports.conversions record (once per batch).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.aggregate.state import Row, RowMember
from shared.contract import versions
from shared.contract.records import Send
from shared.contract.report_deltas import row_from_key

REPORTS = "reports.conversions"


def apply_delta(row: Row, delta: dict[str, Any]) -> bool:
    """Stage 2: apply one delta to a row's members; False if it changes nothing."""
    key = delta["conversion_key"]
    version = int(delta["version"])
    current = row.members.get(key)
    if current is not None and current.version >= version:
        return False
    if delta["op"] == "add":
        row.members[key] = RowMember(version, True, delta.get("value"), delta.get("currency"))
    else:
        row.members[key] = RowMember(version, False)
    return True


def on_delta(row: Row, delta: dict[str, Any], now_ms: int) -> bool:
    """Stage 2, one reports.deltas record: True if the row changed (and got a new version)."""
    if not apply_delta(row, delta):
        return False
    row.version = versions.next_stamp(row.version, now_ms)
    return True


def summarise(key: str, row: Row) -> dict[str, Any] | None:
    """The reports.conversions value of a row, or None when it holds no conversion."""
    count = 0
    sums: dict[str, Decimal] = {}
    for member in row.members.values():
        if not member.present:
            continue
        count += 1
        if member.value is not None and member.currency:
            sums[member.currency] = sums.get(member.currency, Decimal(0)) + Decimal(
                repr(member.value)
            )
    if count == 0:
        return None
    return {
        **row_from_key(key),
        "conversions": count,
        "value": {cur: float(total) for cur, total in sorted(sums.items())},
        "version": row.version,
    }


def publish_row(key: str, row: Row) -> Send:
    """The row's reports.conversions record (a tombstone when it emptied)."""
    return Send(REPORTS, key, summarise(key, row))
