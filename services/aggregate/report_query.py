"""Report queries over aggregate rows (pure)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.aggregate.rules import row_from_key, summarise
from services.aggregate.state import decode_row

LEVELS = {
    "campaign": ("campaign_id",),
    "ad_group": ("campaign_id", "ad_group_id"),
    "ad": ("campaign_id", "ad_group_id", "ad_id"),
}


class QueryError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ReportQuery:
    ad_account_id: str
    start: str
    end: str
    level: str


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
    return ReportQuery(account, start, end, level)


def summarise_rows(query: ReportQuery, rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Sum the account's rows in the date range at the requested level."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, row in rows:
        summary = summarise(key, decode_row(row))
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
        "rows": ordered,
    }


__all__ = ["QueryError", "ReportQuery", "parse_query", "row_from_key", "summarise_rows"]
