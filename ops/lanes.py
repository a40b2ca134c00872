"""The three report lanes of one ad account side by side (pure): what `convmesh
summary --ad-account` and `make demo` print.

* observed: ``reports.conversions`` (exact; for the advertiser's own use);
* protected: ``reports.conversions.protected`` (differentially private, with the
  ε each release cost and the rows suppressed below k left out);
* modeled: ``reports.conversions.modeled`` (unidentified conversions, modeled).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any


def _of_account(rows: Iterable[Mapping[str, Any]], account: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if r and r.get("ad_account_id") == account]


def lanes_by_date(
    account: str,
    observed: Iterable[Mapping[str, Any]],
    protected: Iterable[Mapping[str, Any]],
    modeled: Iterable[Mapping[str, Any]],
    ledger: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """Per date: observed conversions (attributed / all), protected conversions
    with their ε (or why there are none), modeled attributed among the unidentified."""
    dates: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "observed_attributed": 0,
            "observed_all": 0,
            "protected": None,
            "protected_rows": 0,
            "epsilon": None,
            "unidentified": 0,
            "modeled_attributed": None,
        }
    )
    for row in _of_account(observed, account):
        day = dates[row["date"]]
        day["observed_all"] += int(row["conversions"])
        if row["attribution_type"] not in ("unattributed", "unidentified"):
            day["observed_attributed"] += int(row["conversions"])
    for row in _of_account(protected, account):
        day = dates[row["date"]]
        day["protected"] = (day["protected"] or 0) + int(row["conversions"])
        day["protected_rows"] += 1
        day["epsilon"] = row.get("epsilon")
    for row in _of_account(modeled, account):
        day = dates[row["date"]]
        day["unidentified"] += int(row.get("unidentified") or 0)
        if row.get("modeled_attributed") is not None:
            day["modeled_attributed"] = (day["modeled_attributed"] or 0.0) + float(
                row["modeled_attributed"]
            )
    released: dict[str, str] = {}
    for week in _of_account(ledger, account):
        released.update({d: "released" for d in week.get("released", [])})
        released.update({d: "refused (budget)" for d in week.get("refused", [])})
    for date, day in dates.items():
        day["release"] = released.get(date, "not yet")
    return {"ad_account_id": account, "dates": dict(sorted(dates.items()))}


def render_lanes(lanes: Mapping[str, Any]) -> str:
    head = (
        f"Report lanes of ad account {lanes['ad_account_id']}\n"
        "  date        | observed: attributed / all | protected (DP): conversions, ε"
        "        | modeled: attributed of unidentified"
    )
    lines = [head]
    for date, day in lanes["dates"].items():
        if day["protected"] is not None:
            protected = (
                f"{day['protected']:>5} in {day['protected_rows']} rows, ε {day['epsilon']:g}"
            )
        elif day["release"] == "released":
            protected = "    - all rows under k"
        else:
            protected = f"    - {day['release']}"
        modeled = (
            f"{day['modeled_attributed']:.1f} of {day['unidentified']}"
            if day["modeled_attributed"] is not None
            else f"- of {day['unidentified']} (too few identified)"
        )
        lines.append(
            f"  {date}  | {day['observed_attributed']:>8} / {day['observed_all']:<15}"
            f" | {protected:<36} | {modeled}"
        )
    lines.append(
        "  observed is exact (the advertiser's own use); protected is differentially"
        " private (docs/privacy.md); modeled estimates the unidentified."
    )
    return "\n".join(lines)
