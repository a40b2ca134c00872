"""What a published result changes in the reports (shared/contract/report_deltas.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.contract import report_deltas as rd
from tests.support.results import attributed_record

DATE = "2025-11-26"


def ops(sends: list[Any]) -> list[dict[str, Any]]:
    """The ops of the one delta record a version makes."""
    [send] = sends
    return rd.ops_of(send.value)


def observed(sends: list[Any]) -> list[dict[str, Any]]:
    return [op for op in ops(sends) if "lane" not in op]


def lane(sends: list[Any], name: str) -> list[tuple[str, str]]:
    return [
        (op["op"], op.get("stratum") or op.get("bucket"))
        for op in ops(sends)
        if op.get("lane") == name
    ]


def test_row_uses_touch_ids_and_type_or_status_for_unattributed() -> None:
    assert rd.row_of(attributed_record()) == {
        "ad_account_id": "1",
        "campaign_id": "c1",
        "ad_group_id": "g1",
        "ad_id": "a1",
        "event_name": "checkout",
        "attribution_type": "click",
        "date": DATE,
    }
    row = rd.row_of(attributed_record(status="unidentified"))
    assert (row["campaign_id"], row["attribution_type"]) == (None, "unidentified")


def test_row_key_round_trips() -> None:
    row = rd.row_of(attributed_record())
    assert rd.row_from_key(rd.row_key(row)) == row


def test_a_version_is_one_delta_record_keyed_by_ad_account() -> None:
    [send] = rd.deltas_of(attributed_record(version=1), attributed_record(version=7, ad="a2"))
    assert (send.topic, send.key) == ("reports.deltas", "1")
    assert (send.value["conversion_key"], send.value["version"]) == ("k", 7)
    assert {(op["conversion_key"], op["version"]) for op in rd.ops_of(send.value)} == {("k", 7)}


def test_a_delta_of_the_older_layout_is_one_op() -> None:
    old = {"op": "add", "row": "r", "conversion_key": "k", "version": 3}
    assert rd.ops_of(old) == [old]


def test_a_first_result_joins_its_row_stratum_and_bucket() -> None:
    sends = rd.deltas_of(None, attributed_record())
    assert [d["op"] for d in observed(sends)] == ["add"]
    assert lane(sends, "modeled") == [("add", f"1:checkout:web:{DATE}")]
    assert lane(sends, "protected") == [("add", f"1:{DATE}")]
    [protected] = [op for op in ops(sends) if op.get("lane") == "protected"]
    assert protected["user"] == "p-1" and protected["campaign_id"] == "c1"


def test_the_protected_op_counts_the_lane_user_when_the_result_has_one() -> None:
    """Not the pseudonym, which changes when its keys rotate."""
    sends = rd.deltas_of(None, attributed_record(), "l.abc")
    [protected] = [op for op in ops(sends) if op.get("lane") == "protected"]
    assert protected["user"] == "l.abc"


def test_a_new_version_in_another_row_removes_then_adds() -> None:
    deltas = observed(
        rd.deltas_of(attributed_record(ad="a1"), attributed_record(version=2, ad="a2"))
    )
    assert [d["op"] for d in deltas] == ["remove", "add"]
    assert deltas[0]["row"] == rd.row_key(rd.row_of(attributed_record(ad="a1")))
    assert deltas[1]["row"] == rd.row_key(rd.row_of(attributed_record(ad="a2")))


def test_a_new_version_in_the_same_row_only_adds() -> None:
    deltas = observed(rd.deltas_of(attributed_record(), attributed_record(version=2, value=3.0)))
    assert [(d["op"], d["value"]) for d in deltas] == [("add", 3.0)]


def test_a_conversion_that_loses_its_attribution_leaves_the_bucket() -> None:
    sends = rd.deltas_of(attributed_record(), attributed_record(version=2, status="unattributed"))
    assert lane(sends, "protected") == [("remove", f"1:{DATE}")]
    assert lane(sends, "modeled") == [("add", f"1:checkout:web:{DATE}")]


def test_a_deleted_users_conversion_leaves_the_protected_lane() -> None:
    """A scrubbed record (``match.user`` null) cannot be bounded per user."""
    assert rd.bucket_key(attributed_record(user=None)) is None
    sends = rd.deltas_of(attributed_record(), attributed_record(version=2, user=None))
    assert lane(sends, "protected") == [("remove", f"1:{DATE}")]


def test_the_fact_of_a_result_is_its_match_outcome() -> None:
    fact = rd.fact_of_result(attributed_record(version=3))
    assert (fact["kind"], fact["ref"], fact["day"], fact["version"]) == ("result", "k", DATE, 3)
    assert fact["outcome"] == "matched:em"
    unmatched = rd.fact_of_result(attributed_record(status="unidentified"))
    assert unmatched["outcome"] == "unmatched:no_identifier"


def test_a_published_result_sends_its_deltas_then_its_fact() -> None:
    sends = rd.sends_of_result(None, attributed_record())
    assert [s.topic for s in sends] == ["reports.deltas", "diagnostics.facts"]
    assert sends[-1].key == "1"


def apply(rows: dict[str, dict[str, tuple[int, bool]]], delta: dict[str, Any]) -> None:
    """The rows stage's rule in brief: a member changes only for a higher version."""
    members = rows.setdefault(delta["row"], {})
    current = members.get(delta["conversion_key"])
    if current is None or current[0] < delta["version"]:
        members[delta["conversion_key"]] = (delta["version"], delta["op"] == "add")


@given(
    st.lists(st.tuples(st.sampled_from(["a1", "a2", "a3"]), st.integers(0, 3)), max_size=30),
    st.randoms(use_true_random=False),
)
def test_rows_hold_each_conversion_once_in_its_newest_row_even_with_replays(updates, rnd) -> None:
    """Published versions in order; any batch of deltas may be delivered again later."""
    last: dict[str, dict[str, Any]] = {}
    deltas: list[dict[str, Any]] = []
    for version, (ad, k) in enumerate(updates, start=1):
        new = attributed_record(f"k{k}", version, ad=ad)
        deltas += observed(rd.deltas_of(last.get(new["conversion_key"]), new))
        last[new["conversion_key"]] = new
    delivered = list(deltas)
    for _ in range(3):  # replays of earlier stretches, as after a crash before a commit
        if deltas:
            start = rnd.randrange(len(deltas))
            delivered += deltas[start : start + rnd.randrange(1, 5)]
    rows: dict[str, dict[str, tuple[int, bool]]] = {}
    for delta in delivered:
        apply(rows, delta)
    for key, newest in last.items():
        holding = [r for r, members in rows.items() if members.get(key, (0, False))[1]]
        assert holding == [rd.row_key(rd.row_of(newest))]
