"""Setup diagnostics, part two (pure): day buckets -> the numbers and advice.

Every number here is one formula of docs/diagnostics.md over the buckets of
the window (the last 1, 7 or 28 UTC days, today included).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from services.aggregate.diagnostics import DELAY_BOUNDS_S, ID_TYPES, empty_cell

WINDOWS = (1, 7, 28)
TOP_REASONS = 5
#: Recommendation thresholds (docs/diagnostics.md).
LOW_COVERAGE = 0.5
LATE_P95_S = 3_600
MIN_EVENTS = 20


def window_days(today: str, days: int) -> list[str]:
    end = dt.date.fromisoformat(today)
    return [(end - dt.timedelta(days=n)).isoformat() for n in range(days)]


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def percentile_s(histogram: list[int], q: float) -> int | None:
    """Upper bound (s) of the bin holding the q-quantile; None above the last bound."""
    total = sum(histogram)
    if not total:
        return None
    rank, seen = q * total, 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank and count:
            return DELAY_BOUNDS_S[index] if index < len(DELAY_BOUNDS_S) else None
    return None


def add_cell(into: dict[str, Any], cell: Mapping[str, Any]) -> None:
    for name in ("valid", "duplicate", "rejected"):
        into[name] += cell[name]
    for name in ID_TYPES:
        into["ids"][name] += cell["ids"].get(name, 0)
    into["delay"] = [a + b for a, b in zip(into["delay"], cell["delay"], strict=True)]


def counts_of(cell: Mapping[str, Any]) -> dict[str, Any]:
    """received = accepted + duplicate + rejected; coverage over valid events."""
    valid = cell["valid"]
    accepted = max(0, valid - cell["duplicate"])
    return {
        "received": valid + cell["rejected"],
        "accepted": accepted,
        "duplicate": cell["duplicate"],
        "rejected": cell["rejected"],
        "identifier_coverage": {name: share(cell["ids"][name], valid) for name in ID_TYPES},
        "freshness_s": {
            "p50": percentile_s(cell["delay"], 0.5),
            "p95": percentile_s(cell["delay"], 0.95),
        },
    }


def summarise_window(buckets: list[Mapping[str, Any]]) -> dict[str, Any]:
    total = empty_cell()
    by_source: dict[str, dict[str, Any]] = {}
    by_event: dict[str, dict[str, Any]] = {}
    reasons: dict[str, dict[str, Any]] = {}
    red = {"tag": 0, "api": 0, "both": 0}
    results: dict[str, int] = {}
    for bucket in buckets:
        for cell_key, cell in bucket["cells"].items():
            source, event_name = cell_key.split("|", 1)
            add_cell(total, cell)
            add_cell(by_source.setdefault(source, empty_cell()), cell)
            add_cell(by_event.setdefault(event_name, empty_cell()), cell)
        for reason_key, found in bucket["reasons"].items():
            reason = reason_key.rsplit("|", 1)[1]
            entry = reasons.setdefault(reason, {"reason": reason, "count": 0, "example": None})
            entry["count"] += found["count"]
            entry["example"] = entry["example"] or found["example"]
        for name in red:
            red[name] += bucket["redundancy"][name]
        for name_outcome, count in bucket["results"].items():
            results[name_outcome] = results.get(name_outcome, 0) + count
    by_name: dict[str, dict[str, int]] = {}
    for name_outcome, count in results.items():
        name, outcome = name_outcome.split("|", 1)
        by_name.setdefault(name, {})[outcome] = count
    overall: dict[str, int] = {}
    for outcomes in by_name.values():
        for outcome, count in outcomes.items():
            overall[outcome] = overall.get(outcome, 0) + count
    top = sorted(reasons.values(), key=lambda r: (-r["count"], r["reason"]))[:TOP_REASONS]
    return {
        **counts_of(total),
        "by_source": {name: counts_of(cell) for name, cell in sorted(by_source.items())},
        "by_event_name": {name: counts_of(cell) for name, cell in sorted(by_event.items())},
        "top_reject_reasons": top,
        "match_rate": match_rate(overall),
        "match_rate_by_event_name": {
            name: match_rate(outcomes)["overall"] for name, outcomes in sorted(by_name.items())
        },
        "redundancy": redundancy(red),
    }


def match_rate(outcomes: Mapping[str, int]) -> dict[str, Any]:
    """matched / results; by key type: results matched by that type / results."""
    matched: dict[str, int] = {}
    for outcome, count in outcomes.items():
        kind, _, detail = outcome.partition(":")
        if kind == "matched":
            matched[detail] = matched.get(detail, 0) + count
    total = sum(outcomes.values())
    return {
        "results": total,
        "overall": share(sum(matched.values()), total),
        "by_key_type": {k: share(n, total) for k, n in sorted(matched.items())},
    }


def redundancy(counts: Mapping[str, int]) -> dict[str, Any]:
    """Conversion keys seen from both tag and api / keys seen from tag or api (per day)."""
    tag, api, both = counts["tag"], counts["api"], counts["both"]
    either = tag + api - both
    return {"tag_keys": tag, "api_keys": api, "both": both, "share": share(both, either)}


def recommendations(window: Mapping[str, Any]) -> list[str]:
    """Concrete advice from one window's numbers (thresholds: docs/diagnostics.md)."""
    advice: list[str] = []
    for name, counts in window["by_event_name"].items():
        valid = counts["accepted"] + counts["duplicate"]
        if valid < MIN_EVENTS:
            continue
        coverage = counts["identifier_coverage"]
        for id_type, label in (("em", "hashed email (em)"), ("ph", "hashed phone (ph)")):
            lacking = 1 - (coverage[id_type] or 0)
            if lacking > LOW_COVERAGE:
                advice.append(
                    f"{lacking:.0%} of {name} events lack {id_type}: sending {label}"
                    " raises the match rate"
                )
        if (coverage["click_id"] or 0) < LOW_COVERAGE:
            advice.append(
                f"{1 - (coverage['click_id'] or 0):.0%} of {name} events lack click_id:"
                " pass the epik click id from the landing URL"
            )
    red = window["redundancy"]
    if red["tag_keys"] and red["api_keys"] and not red["both"]:
        advice.append(
            "tag and API events never share event_id: deduplication cannot work;"
            " send the same event_id from both"
        )
    if window["received"] and (window["rejected"] / window["received"]) > 0.05:
        top = window["top_reject_reasons"][0]["reason"]
        advice.append(
            f"{window['rejected'] / window['received']:.0%} of events are rejected,"
            f" mostly {top}: see the example and docs/reason-codes.md"
        )
    p95 = window["freshness_s"]["p95"]
    if window["accepted"] >= MIN_EVENTS and (p95 is None or p95 > LATE_P95_S):
        advice.append(
            "95% of events arrive within "
            + (f"{p95 // 60} minutes" if p95 is not None else "more than 7 days")
            + " of event_time: send events as they happen"
        )
    return advice


def summarise(
    ad_account_id: str, today: str, buckets: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The diagnostics of one account: ``buckets`` maps UTC day -> bucket."""
    windows = {}
    for days in WINDOWS:
        found = [buckets[d] for d in window_days(today, days) if d in buckets]
        window = summarise_window(found)
        window["recommendations"] = recommendations(window)
        windows[f"{days}d"] = window
    return {"ad_account_id": ad_account_id, "as_of": today, "windows": windows}
