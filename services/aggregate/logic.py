"""Report aggregation, exact under redelivery and re-attribution.

Two stages:

1. per **conversion_key**: the last result counted. A newer version of a
   conversion leaves its old row (``remove``) and joins its new one (``add``).
2. per **row** (partitioned by ad account): the row's *members*, i.e. which
   conversion (at which version, with which value) it holds. Counting members
   instead of adding increments makes every delta idempotent: a delta replayed
   after a crash changes nothing, and an old delta cannot undo a newer one.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson

ROW_FIELDS = (
    "ad_account_id",
    "campaign_id",
    "ad_group_id",
    "ad_id",
    "event_name",
    "attribution_type",
    "date",
)


def utc_date(event_time: int) -> str:
    return dt.datetime.fromtimestamp(event_time, tz=dt.UTC).date().isoformat()


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """The report row a conversions.attributed record belongs to."""
    touch = record.get("touch")
    attributed = record["status"] == "attributed" and touch is not None
    return {
        "ad_account_id": record["ad_account_id"],
        "campaign_id": touch["campaign_id"] if attributed else None,
        "ad_group_id": touch["ad_group_id"] if attributed else None,
        "ad_id": touch["ad_id"] if attributed else None,
        "event_name": record["event_name"],
        "attribution_type": touch["type"] if attributed else record["status"],
        "date": utc_date(int(record["event_time"])),
    }


def row_key(row: dict[str, Any]) -> str:
    """A stable, unambiguous key: the row fields as a JSON array."""
    return orjson.dumps([row[f] for f in ROW_FIELDS]).decode()


def row_from_key(key: str) -> dict[str, Any]:
    return dict(zip(ROW_FIELDS, orjson.loads(key), strict=True))


def on_result(
    last: dict[str, Any] | None, record: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Stage 1: (new last-counted state or None if stale, deltas to send)."""
    version = int(record["version"])
    if last is not None and last["version"] >= version:
        return None, []
    key = record["conversion_key"]
    new_row = row_key(row_of(record))
    deltas = []
    if last is not None and last["row"] != new_row:
        deltas.append(
            {"op": "remove", "row": last["row"], "conversion_key": key, "version": version}
        )
    deltas.append(
        {
            "op": "add",
            "row": new_row,
            "conversion_key": key,
            "version": version,
            "value": record.get("value"),
            "currency": record.get("currency"),
        }
    )
    return {"version": version, "row": new_row}, deltas


def apply_delta(members: dict[str, list[Any]], delta: dict[str, Any]) -> bool:
    """Stage 2: apply one delta to a row's members; False if it changes nothing.

    A member is ``[version, present, value, currency]``; a removed member stays
    as a tombstone with its version so that an older ``add`` replayed later
    cannot bring it back.
    """
    key = delta["conversion_key"]
    current = members.get(key)
    if current is not None and current[0] >= delta["version"]:
        return False
    if delta["op"] == "add":
        members[key] = [delta["version"], True, delta.get("value"), delta.get("currency")]
    else:
        members[key] = [delta["version"], False, None, None]
    return True


def summarise(key: str, members: dict[str, list[Any]], version: int) -> dict[str, Any] | None:
    """The reports.conversions value of a row, or None when it holds no conversion."""
    count = 0
    sums: dict[str, Decimal] = {}
    for _version, present, value, currency in members.values():
        if not present:
            continue
        count += 1
        if value is not None and currency:
            sums[currency] = sums.get(currency, Decimal(0)) + Decimal(repr(value))
    if count == 0:
        return None
    return {
        **row_from_key(key),
        "conversions": count,
        "value": {cur: float(total) for cur, total in sorted(sums.items())},
        "version": version,
    }
