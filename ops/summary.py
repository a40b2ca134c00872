"""A readable summary of what the pipeline did, computed from its topics (pure).

Counts come from the outputs themselves, so they stay exact across restarts
(a redelivered input has the same raw position and is counted once):
received = accepted + duplicates + rejected.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any


def pipeline_summary(
    *,
    raw_received: int,
    accepted: Iterable[Mapping[str, Any]],
    duplicates: Iterable[Mapping[str, Any]],
    dlq: Iterable[Mapping[str, Any]],
    raw_topic: str,
    attributed: Mapping[str, Mapping[str, Any]],
    reports: Mapping[str, Mapping[str, Any]],
    top: int = 5,
) -> dict[str, Any]:
    accepted_refs = {a["raw_ref"]: a.get("source", "topic") for a in accepted}
    duplicate_refs = {d["raw_ref"]: d.get("source", "topic") for d in duplicates}
    rejected = {
        (d["partition"], d["offset"]): d["reason"]
        for d in dlq
        if d.get("source_topic") == raw_topic
    }
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    for source in accepted_refs.values():
        by_source[source]["accepted"] += 1
    for source in duplicate_refs.values():
        by_source[source]["duplicates"] += 1
    results = list(attributed.values())
    matched = Counter((r.get("match") or {}).get("key_type") for r in results if r.get("match"))
    statuses = Counter(r["status"] for r in results)
    reasons = Counter(r["unidentified_reason"] for r in results if r["unidentified_reason"])
    touches = Counter(r["touch"]["type"] for r in results if r.get("touch"))
    return {
        "events": {
            "received": raw_received,
            "accepted": len(accepted_refs),
            "duplicates": len(duplicate_refs),
            "rejected": len(rejected),
            "balanced": raw_received == len(accepted_refs) + len(duplicate_refs) + len(rejected),
            "by_source": {s: dict(c) for s, c in sorted(by_source.items())},
            "rejected_by_reason": dict(Counter(rejected.values()).most_common()),
        },
        "conversions": len(results),
        "status": dict(statuses),
        "unidentified_reasons": dict(reasons),
        "match_rate_by_key_type": {
            k: round(v / len(results), 4) if results else 0.0 for k, v in matched.most_common()
        },
        "attributed_by_type": {t: touches.get(t, 0) for t in ("click", "engagement", "view")},
        "top_campaigns": top_campaigns(reports.values(), top),
        "report_rows": len(reports),
    }


def top_campaigns(rows: Iterable[Mapping[str, Any]], top: int) -> list[dict[str, Any]]:
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if not row.get("campaign_id"):
            continue
        key = (row["ad_account_id"], row["campaign_id"])
        entry = totals.setdefault(key, {"conversions": 0, "value": defaultdict(Decimal)})
        entry["conversions"] += row["conversions"]
        for currency, amount in (row.get("value") or {}).items():
            entry["value"][currency] += Decimal(repr(amount))
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1]["conversions"], kv[0]))[:top]
    return [
        {
            "ad_account_id": account,
            "campaign_id": campaign,
            "conversions": e["conversions"],
            "value": {c: float(v) for c, v in sorted(e["value"].items())},
        }
        for (account, campaign), e in ranked
    ]


def render(summary: Mapping[str, Any]) -> str:
    """The summary as text for a terminal."""
    ev = summary["events"]
    lines = [
        "Events on conversions.raw",
        f"  received {ev['received']} = accepted {ev['accepted']} + duplicates "
        f"{ev['duplicates']} + rejected {ev['rejected']}"
        f"  ({'balanced' if ev['balanced'] else 'NOT BALANCED'})",
    ]
    for source, counts in ev["by_source"].items():
        lines.append(f"  {source:<6} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if ev["rejected_by_reason"]:
        reasons = ", ".join(f"{r} {n}" for r, n in ev["rejected_by_reason"].items())
        lines.append(f"  rejected by reason: {reasons}")
    lines.append(
        f"Conversions: {summary['conversions']}  "
        + ", ".join(f"{s} {n}" for s, n in sorted(summary["status"].items()))
    )
    if summary["unidentified_reasons"]:
        lines.append(
            "  unidentified: "
            + ", ".join(f"{r} {n}" for r, n in sorted(summary["unidentified_reasons"].items()))
        )
    lines.append(
        "Match rate by key type: "
        + ", ".join(f"{k} {v:.1%}" for k, v in summary["match_rate_by_key_type"].items())
    )
    lines.append(
        "Attributed by: " + ", ".join(f"{t} {n}" for t, n in summary["attributed_by_type"].items())
    )
    lines.append("Top campaigns:")
    for c in summary["top_campaigns"]:
        value = ", ".join(f"{cur} {amount:,.2f}" for cur, amount in c["value"].items())
        lines.append(
            f"  {c['ad_account_id']} / {c['campaign_id']:<10} "
            f"{c['conversions']:>5} conversions  {value}"
        )
    lines.append(f"Report rows: {summary['report_rows']}")
    return "\n".join(lines)
