"""Report queries over aggregate rows, strata and releases (pure).

Lanes (docs/api.md): ``observed`` sums the account's rows at the level;
``modeled`` lists the modeled strata (per event name, action source and
date: the level does not apply); ``protected`` lists the released noisy rows
still held by aggregate (campaign level; older releases are on
reports.conversions.protected).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from services.aggregate.lanes import modeled_record
from services.aggregate.rules import summarise
from services.aggregate.state import decode_privacy, decode_row_totals, decode_stratum_totals
from shared.contract.report_deltas import row_from_key

LEVELS = {
    "campaign": ("campaign_id",),
    "ad_group": ("campaign_id", "ad_group_id"),
    "ad": ("campaign_id", "ad_group_id", "ad_id"),
}
LANES = ("observed", "protected", "modeled")


class QueryError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ReportQuery:
    ad_account_id: str
    start: str
    end: str
    level: str
    lane: str = "observed"

    def row_prefix(self) -> bytes:
        """The start of every ``rows`` key of the account (a JSON array)."""
        return orjson.dumps([self.ad_account_id])[:-1] + b","

    def colon_prefix(self) -> bytes:
        """The start of every ``strata`` key of the account."""
        return f"{self.ad_account_id}:".encode()


def parse_query(params: dict[str, str]) -> ReportQuery:
    account = params.get("ad_account_id", "")
    if not account.isdigit():
        raise QueryError("ad_account_id (digits) is required")
    level = params.get("level", "campaign")
    if level not in LEVELS:
        raise QueryError(f"level must be one of {sorted(LEVELS)}")
    try:
        start = dt.date.fromisoformat(params.get("from", "1970-01-01")).isoformat()
        end = dt.date.fromisoformat(params.get("to", "9999-12-31")).isoformat()
    except ValueError:
        raise QueryError("from and to must be dates YYYY-MM-DD") from None
    lane = params.get("lane", "observed")
    if lane not in LANES:
        raise QueryError(f"lane must be one of {list(LANES)}")
    return ReportQuery(account, start, end, level, lane)


def summarise_rows(query: ReportQuery, rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Sum the account's rows in the date range at the requested level."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, row in rows:
        summary = summarise(key, decode_row_totals(row))
        if summary is None or not (query.start <= summary["date"] <= query.end):
            continue
        ident = tuple(summary[f] for f in LEVELS[query.level])
        group_key = (*ident, summary["event_name"], summary["attribution_type"])
        group = groups.setdefault(
            group_key,
            {
                **dict(zip(LEVELS[query.level], ident, strict=True)),
                "event_name": summary["event_name"],
                "attribution_type": summary["attribution_type"],
                "conversions": 0,
                "value": {},
            },
        )
        group["conversions"] += summary["conversions"]
        for currency, amount in summary["value"].items():
            total = Decimal(repr(group["value"].get(currency, 0.0))) + Decimal(repr(amount))
            group["value"][currency] = float(total)
    ordered = sorted(groups.values(), key=lambda g: (-g["conversions"], str(g)))
    return {
        "ad_account_id": query.ad_account_id,
        "from": query.start,
        "to": query.end,
        "level": query.level,
        "lane": "observed",
        "rows": ordered,
    }


def summarise_strata(
    query: ReportQuery, strata: list[tuple[str, dict[str, Any]]], k: int
) -> dict[str, Any]:
    """The modeled lane: one record per stratum in the date range."""
    found = []
    for key, value in strata:
        record = modeled_record(key, decode_stratum_totals(value), k)
        if record is not None and query.start <= record["date"] <= query.end:
            found.append({f: v for f, v in record.items() if f not in ("ad_account_id", "version")})
    found.sort(key=lambda r: (r["date"], r["event_name"], r["action_source"]))
    return {**_header(query), "lane": "modeled", "rows": found}


def summarise_releases(query: ReportQuery, privacy: dict[str, Any] | None) -> dict[str, Any]:
    """The protected lane: the released noisy rows in the date range."""
    account = decode_privacy(privacy)
    found = [
        {f: v for f, v in row.items() if f != "ad_account_id"}
        for date, release in sorted(account.released.items())
        if query.start <= date <= query.end and release.published
        for _key, row in sorted(release.rows.items())
    ]
    return {**_header(query), "level": "campaign", "lane": "protected", "rows": found}


def _header(query: ReportQuery) -> dict[str, Any]:
    return {
        "ad_account_id": query.ad_account_id,
        "from": query.start,
        "to": query.end,
        "level": query.level,
    }


def to_csv(report: dict[str, Any]) -> str:
    """The report's rows as CSV: one column per field, ``value.{CUR}`` per currency."""
    flat = [_flatten(row) for row in report["rows"]]
    columns = list(dict.fromkeys(c for row in flat for c in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in sorted(value.items())})
        elif isinstance(value, list):
            flat[name] = orjson.dumps(value).decode()
        else:
            flat[name] = value
    return flat


__all__ = [
    "QueryError",
    "ReportQuery",
    "parse_query",
    "row_from_key",
    "summarise_releases",
    "summarise_rows",
    "summarise_strata",
    "to_csv",
]
