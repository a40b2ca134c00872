"""The privacy lanes' pure rules (shared/contract/privacy_lanes.py)."""

import math

from hypothesis import given
from hypothesis import strategies as st

from shared.contract import privacy_lanes as pl

DAY_MS = 86_400_000


def contribution(key, user, event_time, row="r", value=1.0, currency="USD"):
    return pl.Contribution(key, user, event_time, row, value, currency)


def test_iso_week_of_a_release_time():
    assert pl.iso_week(1_764_151_200_000) == "2025-W48"  # 2025-11-26
    assert pl.iso_week(1_767_139_200_000) == "2026-W01"  # 2025-12-31 is in 2026's week 1


def test_a_date_closes_its_end_plus_the_delay_after():
    end = pl.date_end_ms("2025-11-26")
    assert not pl.is_closed("2025-11-26", end + 3_599_999, 3_600)
    assert pl.is_closed("2025-11-26", end + 3_600_000, 3_600)


def test_bounding_keeps_each_users_earliest_conversions_ties_by_key():
    kept = pl.bound_contributions(
        [
            contribution("k3", "u1", 20),
            contribution("k2", "u1", 10),
            contribution("k1", "u1", 10),
            contribution("k4", "u2", 30),
        ],
        user_cap=2,
    )
    assert [c.conversion_key for c in kept] == ["k1", "k2", "k4"]


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 5)), max_size=30),
    st.integers(1, 3),
)
def test_no_user_contributes_more_than_the_cap(pairs, cap):
    contributions = [contribution(f"k{i}", u, t) for i, (u, t) in enumerate(pairs)]
    kept = pl.bound_contributions(contributions, cap)
    for user in "abc":
        mine = [c for c in contributions if c.user == user]
        assert sum(c.user == user for c in kept) == min(cap, len(mine))


def test_values_are_clipped_to_zero_and_the_cap():
    assert [pl.clip(v, 1000.0) for v in (-5.0, 12.5, 2500.0, None, math.nan)] == [
        0.0,
        12.5,
        1000.0,
        0.0,
        0.0,
    ]


def test_exact_release_counts_distinct_users_conversions_and_clipped_sums():
    exact = pl.exact_release(
        [
            contribution("k1", "u1", 1, value=2000.0),
            contribution("k2", "u1", 2, value=5.0),
            contribution("k3", "u2", 3, currency="EUR"),
        ],
        value_cap=1000.0,
    )
    assert exact.users == {"r": 2} and exact.conversions == {"r": 3}
    assert exact.sums == {("r", "USD"): 1005.0, ("r", "EUR"): 1.0}


def test_epsilon_split_adds_up_to_the_release():
    for cap in (1, 2, 5):
        split = pl.split_epsilon(1.0, cap)
        assert split.users + split.conversions + split.sums == 1.0
    assert pl.split_epsilon(1.0, 1).conversions == 0.0  # counts and users are one statistic


def test_the_ledger_charges_until_the_budget_then_refuses_once():
    week = pl.LedgerWeek("1", "2025-W48", budget=2.0)
    for date in ("d1", "d2"):
        answer = pl.charge(week, date, 1.0)
        assert answer.granted and answer.changed
        week = answer.week
    refused = pl.charge(week, "d3", 1.0)
    assert not refused.granted and refused.week.refused == ("d3",) and refused.week.spent == 2.0
    again = pl.charge(refused.week, "d3", 1.0)
    assert not again.granted and not again.changed


def test_a_date_released_this_week_is_not_charged_twice():
    week = pl.charge(pl.LedgerWeek("1", "w", budget=4.0), "d1", 1.0).week
    answer = pl.charge(week, "d1", 1.0)
    assert answer.granted and not answer.changed and answer.week.spent == 1.0


def test_epsilon_sums_tolerate_float_rounding():
    week = pl.LedgerWeek("1", "w", budget=0.3)
    for date in ("a", "b", "c"):
        answer = pl.charge(week, date, 0.1)
        assert answer.granted
        week = answer.week


def test_ledger_record_round_trips():
    week = pl.LedgerWeek("1", "2025-W48", 4.0, 1.0, ("2025-11-20",), ("2025-11-21",))
    assert pl.LedgerWeek.from_record(week.record()) == week


def test_wilson_interval_matches_the_textbook_value():
    low, high = pl.wilson_interval(56, 140)
    # (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), p = 0.4, n = 140, z = 1.96
    assert math.isclose(low, 0.32257, abs_tol=1e-4) and math.isclose(high, 0.48277, abs_tol=1e-4)
    assert pl.wilson_interval(0, 10)[0] == 0.0 and pl.wilson_interval(10, 10)[1] == 1.0


@given(st.integers(1, 500), st.data())
def test_wilson_interval_holds_the_share(trials, data):
    successes = data.draw(st.integers(0, trials))
    low, high = pl.wilson_interval(successes, trials)
    assert 0.0 <= low <= successes / trials <= high <= 1.0


def test_modeled_estimate_applies_the_identified_share_to_the_unidentified():
    estimate = pl.modeled_estimate(140, 56, 35, k=50)
    assert estimate.modeled_attributed == 14.0
    low, high = estimate.ci95
    assert math.isclose(low, 35 * 0.32257, abs_tol=1e-2) and math.isclose(
        high, 35 * 0.48277, abs_tol=1e-2
    )


def test_no_estimate_below_k_identified():
    assert pl.modeled_estimate(49, 20, 10, k=50) == pl.Modeled(None, None)
    assert pl.modeled_estimate(0, 0, 10, k=0) == pl.Modeled(None, None)
