"""Report aggregation (services/aggregate/logic.py and report_query.py)."""

from hypothesis import given
from hypothesis import strategies as st

from services.aggregate import logic
from services.aggregate.report_query import parse_query, summarise_rows

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
        "event_time": T,
        "status": status,
        "touch": touch,
        "version": version,
        "value": value,
        "currency": "USD",
    }


def test_row_uses_touch_ids_and_type_or_status_for_unattributed():
    assert logic.row_of(record()) == {
        "ad_account_id": "1",
        "campaign_id": "c1",
        "ad_group_id": "g1",
        "ad_id": "a1",
        "event_name": "checkout",
        "attribution_type": "click",
        "date": "2025-11-26",
    }
    row = logic.row_of(record(status="unidentified"))
    assert (row["campaign_id"], row["attribution_type"]) == (None, "unidentified")


def test_row_key_round_trips():
    row = logic.row_of(record())
    assert logic.row_from_key(logic.row_key(row)) == row


def test_new_version_in_another_row_removes_then_adds():
    last, deltas = logic.on_result(None, record(version=1))
    assert [d["op"] for d in deltas] == ["add"]
    last2, deltas = logic.on_result(last, record(version=2, ad="a2"))
    assert [d["op"] for d in deltas] == ["remove", "add"]
    assert deltas[0]["row"] == last["row"] and deltas[1]["row"] == last2["row"]


def test_stale_version_changes_nothing():
    last, _ = logic.on_result(None, record(version=5))
    assert logic.on_result(last, record(version=4)) == (None, [])
    assert logic.on_result(last, record(version=5)) == (None, [])


def test_replayed_and_out_of_date_deltas_are_idempotent():
    members = {}
    add = {"op": "add", "conversion_key": "k", "version": 1, "value": 1.5, "currency": "USD"}
    remove = {"op": "remove", "conversion_key": "k", "version": 2}
    assert logic.apply_delta(members, add)
    assert not logic.apply_delta(members, add)
    assert logic.apply_delta(members, remove)
    assert not logic.apply_delta(members, add)  # an old add cannot resurrect it
    assert logic.summarise(logic.row_key(logic.row_of(record())), members, 3) is None


def test_summary_counts_members_and_sums_values_exactly():
    members = {}
    for i, value in enumerate([0.1, 0.2, None]):
        logic.apply_delta(
            members,
            {
                "op": "add",
                "conversion_key": str(i),
                "version": 1,
                "value": value,
                "currency": "USD",
            },
        )
    summary = logic.summarise(logic.row_key(logic.row_of(record())), members, 3)
    assert summary["conversions"] == 3
    assert summary["value"] == {"USD": 0.3}


@given(st.lists(st.tuples(st.sampled_from(["a1", "a2", "a3"]), st.integers(1, 50)), max_size=40))
def test_rows_hold_each_conversion_once_at_its_newest_version(updates):
    """Whatever the order of versions, every conversion sits in exactly one row."""
    lasts: dict[str, dict] = {}
    rows: dict[str, dict] = {}
    newest: dict[str, tuple[int, str]] = {}
    for i, (ad, version) in enumerate(updates):
        key = f"k{i % 4}"
        new_last, deltas = logic.on_result(lasts.get(key), record(key, version, ad=ad))
        if new_last is not None:
            lasts[key] = new_last
        for delta in deltas:
            logic.apply_delta(rows.setdefault(delta["row"], {}), delta)
        if key not in newest or version > newest[key][0]:
            newest[key] = (version, ad)
    for key, (_version, ad) in newest.items():
        holding = [r for r, m in rows.items() if m.get(key, [0, False])[1]]
        assert holding == [logic.row_key(logic.row_of(record(key, ad=ad)))]


def test_report_query_sums_rows_at_campaign_level_in_the_date_range():
    rows = []
    for key, ad in (("k1", "a1"), ("k2", "a2")):
        _last, deltas = logic.on_result(None, record(key, ad=ad))
        members = {}
        logic.apply_delta(members, deltas[0])
        rows.append((deltas[0]["row"], {"members": members, "version": 1}))
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
