"""What a new version of a conversion's result changes in the reports (pure).

attribute's publisher writes each result to conversions.attributed and, in the
same batch, what it changes in aggregate's state: **deltas** on reports.deltas
(keyed by ad account, so all rows of an account live on one partition) and a
**fact** on diagnostics.facts. The publisher holds the last record it
published per conversion_key, so it knows the row (and lane stratum and
bucket) a conversion leaves and the one it joins. aggregate applies the deltas
to the rows' members (``services.aggregate.rules``): idempotent per
conversion_key and version, so a delta repeated after a crash changes nothing
and an older one never undoes a newer one.

Before this module the publisher's records were read back from the compacted
conversions.attributed by an aggregate ``results`` stage keeping its own copy
of the last result per conversion_key: one hop, one table and one changelog
record per conversion more (docs/design.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson

from shared.contract.records import Send

DELTAS = "reports.deltas"
FACTS = "diagnostics.facts"

ROW_FIELDS = (
    "ad_account_id",
    "campaign_id",
    "ad_group_id",
    "ad_id",
    "event_name",
    "attribution_type",
    "date",
)
#: The event name of a diagnostics fact whose record has none.
UNKNOWN = "unknown"


def utc_date(event_time: int) -> str:
    """The UTC day of an event_time (Unix seconds), ``YYYY-MM-DD``."""
    return dt.datetime.fromtimestamp(event_time, tz=dt.UTC).date().isoformat()


def row_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The report row a conversions.attributed record belongs to."""
    touch: Mapping[str, Any] | None = record.get("touch")
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


def row_key(row: Mapping[str, Any]) -> str:
    """A stable, unambiguous key: the row fields as a JSON array."""
    return orjson.dumps([row[f] for f in ROW_FIELDS]).decode()


def row_from_key(key: str) -> dict[str, Any]:
    return dict(zip(ROW_FIELDS, orjson.loads(key), strict=True))


def stratum_key(record: Mapping[str, Any]) -> str:
    """The modeled-lane stratum of a conversion (every result has one)."""
    date = utc_date(int(record["event_time"]))
    return f"{record['ad_account_id']}:{record['event_name']}:{record['action_source']}:{date}"


def bucket_key(record: Mapping[str, Any]) -> str | None:
    """The protected bucket of an attributed conversion of a known user, else None.

    A conversion whose user was deleted (``match.user`` null) cannot be
    bounded per user, so it leaves the lane.
    """
    match = record.get("match") or {}
    if record["status"] != "attributed" or not record.get("touch") or not match.get("user"):
        return None
    return f"{record['ad_account_id']}:{utc_date(int(record['event_time']))}"


def deltas_of(
    last: Mapping[str, Any] | None, record: Mapping[str, Any], lane_user: str | None = None
) -> list[Send]:
    """The reports.deltas record of ``record`` replacing ``last`` (None: the first result).

    One record per new version, keyed by ad account: the conversion_key, the
    new version, and its ``ops`` in order: the observed row first (``remove``
    from the row it leaves, ``add`` to its row), then the modeled stratum,
    then the protected bucket (only for an attributed conversion of a known
    user). Each op is applied on its own (``services.aggregate``): a member
    changes only for a higher version, so the record is idempotent as a whole.
    The protected op's ``user`` is ``lane_user`` (``shared.contract.keys.lane_user``:
    stable across pseudonym key rotations), else the record's pseudonym.
    """
    ops: list[dict[str, Any]] = []
    new_row = row_key(row_of(record))
    if last is not None and (old_row := row_key(row_of(last))) != new_row:
        ops.append({"op": "remove", "row": old_row})
    ops.append(
        {
            "op": "add",
            "row": new_row,
            "value": record.get("value"),
            "currency": record.get("currency"),
        }
    )

    stratum = stratum_key(record)
    if last is not None and (old_stratum := stratum_key(last)) != stratum:
        ops.append({"lane": "modeled", "op": "remove", "stratum": old_stratum})
    ops.append({"lane": "modeled", "op": "add", "stratum": stratum, "status": record["status"]})

    bucket = bucket_key(record)
    old_bucket = bucket_key(last) if last is not None else None
    if old_bucket is not None and old_bucket != bucket:
        ops.append({"lane": "protected", "op": "remove", "bucket": old_bucket})
    if bucket is not None:
        touch = record["touch"]
        ops.append(
            {
                "lane": "protected",
                "op": "add",
                "bucket": bucket,
                "user": lane_user or record["match"]["user"],
                "event_time": int(record["event_time"]),
                "campaign_id": touch["campaign_id"],
                "event_name": record["event_name"],
                "attribution_type": touch["type"],
                "value": record.get("value"),
                "currency": record.get("currency"),
            }
        )
    key = record["conversion_key"]
    delta = {"conversion_key": key, "version": int(record["version"]), "ops": ops}
    return [Send(DELTAS, record["ad_account_id"], delta)]


def ops_of(delta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A reports.deltas record's ops, each with its conversion_key and version.

    A record without ``ops`` is one op (the layout of before the ops were
    combined into one record per version).
    """
    if "ops" not in delta:
        return [dict(delta)]
    common = {"conversion_key": delta["conversion_key"], "version": delta["version"]}
    return [{**op, **common} for op in delta["ops"]]


def day_of_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()


def fact_of_result(record: Mapping[str, Any]) -> dict[str, Any]:
    """The diagnostics fact of a result: its match outcome (docs/diagnostics.md)."""
    match = record.get("match") or {}
    if match.get("key_type"):
        outcome = f"matched:{match['key_type']}"
    else:
        outcome = f"unmatched:{record.get('unidentified_reason') or record.get('status')}"
    return {
        "kind": "result",
        "ref": record["conversion_key"],
        "ad_account_id": record["ad_account_id"],
        "day": day_of_ms(int(record["event_time"]) * 1000),
        "event_name": record.get("event_name") or UNKNOWN,
        "version": record.get("version", 0),
        "outcome": outcome,
    }


def sends_of_result(
    last: Mapping[str, Any] | None, record: Mapping[str, Any], lane_user: str | None = None
) -> list[Send]:
    """Everything aggregate learns from one published result: deltas, then the fact."""
    fact = fact_of_result(record)
    return [*deltas_of(last, record, lane_user), Send(FACTS, fact["ad_account_id"], fact)]
