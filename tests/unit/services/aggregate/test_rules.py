"""Report aggregation rules (services/aggregate/rules.py and report_query.py)."""

from hypothesis import given
from hypothesis import strategies as st

from services.aggregate import rules
from services.aggregate.report_query import parse_query, summarise_rows
from services.aggregate.state import Row, encode_row

T = 1_764_151_000  # 2025-11-26 UTC


def record(key="k", version=1, status="attributed", touch_type="click", ad="a1", value=10.5):
    touch = None
    if status == "attributed":
        touch = {
            "engagement_id": "e",
            "campaign_id": "c1",
            "ad_group_id": "g1",
            "ad_id": ad,
            "type": touch_type,
            "ts_ms": 0,
        }
    return {
        "conversion_key": key,
        "ad_account_id": "1",
        "event_name": "checkout",
        "action_source": "web",
        "match": {"key_type": "em", "user": "p-1"} if status != "unidentified" else None,
        "event_time": T,
        "status": status,
        "touch": touch,
        "version": version,
        "value": value,
        "currency": "USD",
    }


def test_row_uses_touch_ids_and_type_or_status_for_unattributed():
    assert rules.row_of(record()) == {
        "ad_account_id": "1",
        "campaign_id": "c1",
        "ad_group_id": "g1",
        "ad_id": "a1",
        "event_name": "checkout",
        "attribution_type": "click",
        "date": "2025-11-26",
    }
    row = rules.row_of(record(status="unidentified"))
    assert (row["campaign_id"], row["attribution_type"]) == (None, "unidentified")


def test_row_key_round_trips():
    row = rules.row_of(record())
    assert rules.row_from_key(rules.row_key(row)) == row


def deltas_of(sends):
    """The observed lane's deltas (the privacy lanes' are tested in test_lanes.py)."""
    assert all(send.topic == "reports.deltas" and send.key == "1" for send in sends)
    return [send.value for send in sends if "lane" not in send.value]


def test_new_version_in_another_row_removes_then_adds():
    last, sends = rules.on_result(None, record(version=1))
    assert [d["op"] for d in deltas_of(sends)] == ["add"]
    last2, sends = rules.on_result(last, record(version=2, ad="a2"))
    deltas = deltas_of(sends)
    assert [d["op"] for d in deltas] == ["remove", "add"]
    assert deltas[0]["row"] == last.row and deltas[1]["row"] == last2.row


def test_new_version_in_the_same_row_only_adds():
    last, _ = rules.on_result(None, record(version=1))
    _, sends = rules.on_result(last, record(version=2, value=3.0))
    assert [(d["op"], d["value"]) for d in deltas_of(sends)] == [("add", 3.0)]


def test_stale_version_changes_nothing():
    last, _ = rules.on_result(None, record(version=5))
    assert rules.on_result(last, record(version=4)) == (None, [])
    assert rules.on_result(last, record(version=5)) == (None, [])


def test_replayed_and_out_of_date_deltas_are_idempotent():
    row = Row()
    add = {"op": "add", "conversion_key": "k", "version": 1, "value": 1.5, "currency": "USD"}
    remove = {"op": "remove", "conversion_key": "k", "version": 2}
    assert rules.apply_delta(row, add)
    assert not rules.apply_delta(row, add)
    assert rules.apply_delta(row, remove)
    assert not rules.apply_delta(row, add)  # an old add cannot resurrect it
    assert rules.summarise(rules.row_key(rules.row_of(record())), row) is None


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
    summary = rules.summarise(rules.row_key(rules.row_of(record())), row)
    assert summary["conversions"] == 3
    assert summary["value"] == {"USD": 0.3}
    assert summary["version"] == 3


def test_an_emptied_row_is_published_as_a_tombstone():
    key = rules.row_key(rules.row_of(record()))
    assert rules.publish_row(key, Row()) == ("reports.conversions", key, None)


@given(st.lists(st.tuples(st.sampled_from(["a1", "a2", "a3"]), st.integers(1, 50)), max_size=40))
def test_rows_hold_each_conversion_once_at_its_newest_version(updates):
    """Whatever the order of versions, every conversion sits in exactly one row."""
    lasts: dict = {}
    rows: dict[str, Row] = {}
    newest: dict[str, tuple[int, str]] = {}
    for i, (ad, version) in enumerate(updates):
        key = f"k{i % 4}"
        new_last, sends = rules.on_result(lasts.get(key), record(key, version, ad=ad))
        if new_last is not None:
            lasts[key] = new_last
        for delta in deltas_of(sends):
            rules.apply_delta(rows.setdefault(delta["row"], Row()), delta)
        if key not in newest or version > newest[key][0]:
            newest[key] = (version, ad)
    for key, (_version, ad) in newest.items():
        holding = [r for r, row in rows.items() if key in row.members and row.members[key].present]
        assert holding == [rules.row_key(rules.row_of(record(key, ad=ad)))]


def test_report_query_sums_rows_at_campaign_level_in_the_date_range():
    rows = []
    for key, ad in (("k1", "a1"), ("k2", "a2")):
        _last, sends = rules.on_result(None, record(key, ad=ad))
        [delta] = deltas_of(sends)
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
