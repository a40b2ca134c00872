"""Report rows (services/aggregate/rules.py and report_query.py)."""

from services.aggregate import rules
from services.aggregate.report_query import parse_query, summarise_rows
from services.aggregate.state import Row, encode_row
from shared.contract.report_deltas import deltas_of, ops_of, row_key, row_of
from tests.support.results import attributed_record


def test_replayed_and_out_of_date_deltas_are_idempotent():
    row = Row()
    add = {"op": "add", "conversion_key": "k", "version": 1, "value": 1.5, "currency": "USD"}
    remove = {"op": "remove", "conversion_key": "k", "version": 2}
    assert rules.apply_delta(row, add)
    assert not rules.apply_delta(row, add)
    assert rules.apply_delta(row, remove)
    assert not rules.apply_delta(row, add)  # an old add cannot resurrect it
    assert rules.summarise(row_key(row_of(attributed_record())), row) is None


def test_a_changed_row_gets_a_version_not_below_the_clock():
    row = Row(version=7)
    add = {"op": "add", "conversion_key": "k", "version": 1, "value": None, "currency": None}
    assert rules.on_delta(row, add, now_ms=1_000) and row.version == 1_000
    assert not rules.on_delta(row, add, now_ms=2_000) and row.version == 1_000


def test_summary_counts_members_and_sums_values_exactly():
    row = Row(version=3)
    for i, value in enumerate([0.1, 0.2, None]):
        rules.apply_delta(
            row,
            {
                "op": "add",
                "conversion_key": str(i),
                "version": 1,
                "value": value,
                "currency": "USD",
            },
        )
    summary = rules.summarise(row_key(row_of(attributed_record())), row)
    assert summary["conversions"] == 3
    assert summary["value"] == {"USD": 0.3}
    assert summary["version"] == 3


def test_an_emptied_row_is_published_as_a_tombstone():
    key = row_key(row_of(attributed_record()))
    assert rules.publish_row(key, Row()) == ("reports.conversions", key, None)


def test_report_query_sums_rows_at_campaign_level_in_the_date_range():
    rows = []
    for key, ad in (("k1", "a1"), ("k2", "a2")):
        [send] = deltas_of(None, attributed_record(key, ad=ad))
        [delta] = [op for op in ops_of(send.value) if "lane" not in op]
        row = Row(version=1)
        rules.apply_delta(row, delta)
        rows.append((delta["row"], encode_row(row)))
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
