"""Report aggregation, exact under redelivery and re-attribution (pure rules).

Two stages:

1. per **conversion_key** (``on_result``): the last result counted. A newer
   version of a conversion leaves its old row (``remove``) and joins its new
   one (``add``): deltas on reports.deltas, keyed by ad account so that all
   rows of an account live on one partition. The same goes for the privacy
   lanes' stratum and bucket (``services.aggregate.lanes``).
2. per **row** (``on_delta``): the row's *members*, i.e. which conversion (at
   which version, with which value) it holds. Counting members instead of
   adding increments makes every delta idempotent: a delta replayed after a
   crash changes nothing, and an old delta cannot undo a newer one.
   ``publish_row`` is the row's reports.conversions record (once per batch).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from services.aggregate.lanes import lane_deltas, utc_date
from services.aggregate.state import Counted, Row, RowMember
from shared.contract import versions
from shared.contract.records import Send

DELTAS = "reports.deltas"
REPORTS = "reports.conversions"

ROW_FIELDS = (
    "ad_account_id",
    "campaign_id",
    "ad_group_id",
    "ad_id",
    "event_name",
    "attribution_type",
    "date",
)


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """The report row a conversions.attributed record belongs to."""
    touch: dict[str, Any] | None = record.get("touch")
    if record["status"] != "attributed" or touch is None:
        touch = {"campaign_id": None, "ad_group_id": None, "ad_id": None, "type": record["status"]}
    return {
        "ad_account_id": record["ad_account_id"],
        "campaign_id": touch["campaign_id"],
        "ad_group_id": touch["ad_group_id"],
        "ad_id": touch["ad_id"],
        "event_name": record["event_name"],
        "attribution_type": touch["type"],
        "date": utc_date(int(record["event_time"])),
    }


def row_key(row: dict[str, Any]) -> str:
    """A stable, unambiguous key: the row fields as a JSON array."""
    return orjson.dumps([row[f] for f in ROW_FIELDS]).decode()


def row_from_key(key: str) -> dict[str, Any]:
    return dict(zip(ROW_FIELDS, orjson.loads(key), strict=True))


def on_result(last: Counted | None, record: dict[str, Any]) -> tuple[Counted | None, list[Send]]:
    """Stage 1, one conversions.attributed record: the new state (None if the
    record is stale: counted already, or older) and the deltas to send."""
    version = int(record["version"])
    if last is not None and last.version >= version:
        return None, []
    key = record["conversion_key"]
    account = record["ad_account_id"]
    new_row = row_key(row_of(record))
    sends = []
    if last is not None and last.row != new_row:
        remove = {"op": "remove", "row": last.row, "conversion_key": key, "version": version}
        sends.append(Send(DELTAS, account, remove))
    add = {
        "op": "add",
        "row": new_row,
        "conversion_key": key,
        "version": version,
        "value": record.get("value"),
        "currency": record.get("currency"),
    }
    sends.append(Send(DELTAS, account, add))
    stratum, bucket, lane_sends = lane_deltas(last, record, version)
    return Counted(version, new_row, stratum, bucket), [*sends, *lane_sends]


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
