"""Report rows (services/aggregate/rules.py and report_query.py)."""

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.aggregate import rules, state
from services.aggregate.report_query import parse_query, summarise_rows
from services.aggregate.state import Row, RowMember, RowTotals, encode_row, encode_row_totals
from shared.contract.report_deltas import deltas_of, ops_of, row_key, row_of
from tests.support.members import apply
from tests.support.results import attributed_record

NOW_MS = 1_000
KEY = row_key(row_of(attributed_record()))


def add(key: str, version: int, value: float | None = 1.5, currency: str | None = "USD"):
    return {
        "op": "add",
        "conversion_key": key,
        "version": version,
        "value": value,
        "currency": currency,
    }


def test_replayed_and_out_of_date_deltas_are_idempotent():
    members: dict[str, Any] = {}
    totals = RowTotals()
    remove = {"op": "remove", "conversion_key": "k", "version": 2}
    assert apply(members, totals, add("k", 1), NOW_MS, rules.row_member)
    assert not apply(members, totals, add("k", 1), NOW_MS, rules.row_member)
    assert apply(members, totals, remove, NOW_MS, rules.row_member)
    assert not apply(members, totals, add("k", 1), NOW_MS, rules.row_member)  # no resurrection
    assert members["k"] == RowMember(2, False)
    assert rules.summarise(row_key(row_of(attributed_record())), totals) is None


def test_a_changed_row_gets_a_version_not_below_the_clock():
    members: dict[str, Any] = {}
    totals = RowTotals(version=7)
    assert apply(members, totals, add("k", 1, None, None), 1_000, rules.row_member)
    assert totals.version == 1_000
    assert not apply(members, totals, add("k", 1, None, None), 2_000, rules.row_member)
    assert totals.version == 1_000


def test_summary_counts_members_and_sums_values_exactly():
    members: dict[str, Any] = {}
    totals = RowTotals(version=3)
    for i, value in enumerate([0.1, 0.2, None]):
        apply(members, totals, add(str(i), 1, value), 0, rules.row_member)
    summary = rules.summarise(row_key(row_of(attributed_record())), totals)
    assert summary["conversions"] == 3
    assert summary["value"] == {"USD": 0.3}
    assert summary["version"] == totals.version == 6  # a new version per change


def test_a_currency_leaves_the_summary_with_its_last_member():
    members: dict[str, Any] = {}
    totals = RowTotals()
    apply(members, totals, add("a", 1, 0.0, "EUR"), NOW_MS, rules.row_member)
    apply(members, totals, add("b", 1, 2.5, "USD"), NOW_MS, rules.row_member)
    assert rules.summarise(KEY, totals)["value"] == {"EUR": 0.0, "USD": 2.5}
    apply(
        members,
        totals,
        {"op": "remove", "conversion_key": "a", "version": 2},
        NOW_MS,
        rules.row_member,
    )
    assert rules.summarise(KEY, totals)["value"] == {"USD": 2.5}


deltas = st.lists(
    st.tuples(
        st.sampled_from(["k1", "k2", "k3", "k4"]),
        st.integers(1, 6),
        st.booleans(),
        st.one_of(
            st.none(),
            st.one_of(
                st.floats(-1e12, 1e12, allow_nan=False).map(lambda v: round(v, 2)),
                st.floats(allow_nan=False, allow_infinity=False),
            ),
        ),
        st.sampled_from(["USD", "EUR", None]),
    ),
    max_size=40,
)


@given(deltas)
def test_totals_kept_delta_by_delta_equal_a_recount_of_the_members(given_deltas):
    """Any order of adds, removals, replays and stale deltas: the running totals are
    what counting the final members gives (the recount after a crash)."""
    members: dict[str, Any] = {}
    totals = RowTotals()
    for key, version, present, value, currency in given_deltas:
        delta = (
            add(key, version, value, currency)
            if present
            else {"op": "remove", "conversion_key": key, "version": version}
        )
        apply(members, totals, delta, NOW_MS, rules.row_member)
    recount = state.row_totals_of(members.values(), totals.version)
    assert totals == recount
    assert state.decode_row_totals(encode_row_totals(totals)) == totals
    assert state.decode_row_totals(encode_row(Row(members, totals.version))) == totals
    assert all(held > 0 for held, _ in totals.sums.values())


def test_a_sum_kept_running_stays_exact_where_28_digits_would_round():
    """Adding then removing a large value leaves the small one's exact digits, as a
    recount of the members gives them (the default decimal context would not)."""
    members: dict[str, Any] = {}
    totals = RowTotals()
    apply(members, totals, add("big", 1, 123456789012.5), NOW_MS, rules.row_member)
    apply(members, totals, add("small", 1, 0.30000000000000004), NOW_MS, rules.row_member)
    remove = {"op": "remove", "conversion_key": "big", "version": 2}
    apply(members, totals, remove, NOW_MS, rules.row_member)
    assert totals.sums["USD"] == (1, Decimal("0.30000000000000004"))
    assert totals == state.row_totals_of(members.values(), totals.version)


def test_totals_round_trip_with_exact_decimal_sums():
    totals = RowTotals(2, {"USD": (2, Decimal("0.30"))}, 9)
    value = encode_row_totals(totals)
    assert value == {"layout": 2, "conversions": 2, "sums": {"USD": [2, "0.30"]}, "version": 9}
    assert state.decode_row_totals(value) == totals


def test_an_emptied_row_is_published_as_a_tombstone():
    key = row_key(row_of(attributed_record()))
    assert rules.publish_row(key, RowTotals()) == ("reports.conversions", key, None)


@pytest.mark.parametrize("layout", [1, 2])
def test_report_query_sums_rows_at_campaign_level_in_the_date_range(layout: int):
    """Rows of either layout (layout 1: members inside the value) sum alike."""
    rows = []
    for key, ad in (("k1", "a1"), ("k2", "a2")):
        [send] = deltas_of(None, attributed_record(key, ad=ad))
        [delta] = [op for op in ops_of(send.value) if "lane" not in op]
        members: dict[str, Any] = {}
        totals = RowTotals(version=1)
        apply(members, totals, delta, NOW_MS, rules.row_member)
        value = encode_row_totals(totals) if layout == 2 else encode_row(Row(members, 1))
        rows.append((delta["row"], value))
    query = parse_query({"ad_account_id": "1", "from": "2025-11-26", "to": "2025-11-26"})
    report = summarise_rows(query, rows)
    assert report["rows"] == [
        {
            "campaign_id": "c1",
            "event_name": "checkout",
            "attribution_type": "click",
            "conversions": 2,
            "value": {"USD": 21.0},
        }
    ]
    outside = parse_query({"ad_account_id": "1", "from": "2025-11-27"})
    assert summarise_rows(outside, rows)["rows"] == []
