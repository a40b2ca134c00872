"""The three lanes of one ad account side by side (ops/lanes.py)."""

from __future__ import annotations

from ops.lanes import lanes_by_date, render_lanes

A = "549755885175"


def observed(date: str, kind: str, n: int, account: str = A) -> dict[str, object]:
    return {"ad_account_id": account, "date": date, "attribution_type": kind, "conversions": n}


def test_observed_counts_attributed_apart_from_all() -> None:
    rows = [observed("2026-11-26", "click", 5), observed("2026-11-26", "unidentified", 2)]
    day = lanes_by_date(A, rows, [], [], [])["dates"]["2026-11-26"]
    assert (day["observed_attributed"], day["observed_all"]) == (5, 7)


def test_other_accounts_are_left_out() -> None:
    rows = [observed("2026-11-26", "click", 5, account="1")]
    assert lanes_by_date(A, rows, [], [], [])["dates"] == {}


def test_protected_rows_carry_their_epsilon_and_the_ledger_says_released_or_refused() -> None:
    protected = [{"ad_account_id": A, "date": "2026-11-26", "conversions": 57, "epsilon": 1.0}]
    ledger = [{"ad_account_id": A, "released": ["2026-11-26"], "refused": ["2026-11-27"]}]
    rows = [observed("2026-11-26", "click", 60), observed("2026-11-27", "click", 3)]
    dates = lanes_by_date(A, rows, protected, [], ledger)["dates"]
    assert dates["2026-11-26"]["protected"] == 57 and dates["2026-11-26"]["epsilon"] == 1.0
    assert dates["2026-11-27"]["release"] == "refused (budget)"
    text = render_lanes(lanes_by_date(A, rows, protected, [], ledger))
    assert "ε 1" in text and "refused (budget)" in text


def test_modeled_sums_the_strata_of_a_date() -> None:
    modeled = [
        {"ad_account_id": A, "date": "2026-11-26", "unidentified": 10, "modeled_attributed": 4.0},
        {"ad_account_id": A, "date": "2026-11-26", "unidentified": 5, "modeled_attributed": None},
    ]
    day = lanes_by_date(A, [], [], modeled, [])["dates"]["2026-11-26"]
    assert day["unidentified"] == 15 and day["modeled_attributed"] == 4.0
