"""Diagnostics facts, buckets and formulas (docs/diagnostics.md)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.aggregate import diagnostics as d
from services.aggregate import diagnostics_summary as s
from shared.contract.diagnostic_facts import fact_of_valid

ACCOUNT = "549755885175"
DAY_MS = 1_764_547_200_000  # 2025-12-01T00:00Z
TODAY = "2025-12-01"


def valid(
    n: int, *, source: str = "api", name: str = "checkout", ids: Any = None, delay_s: int = 10
) -> dict[str, Any]:
    received = DAY_MS + 3_600_000
    return {
        "conversion_key": f"{ACCOUNT}:{name}:ev-{n}:online",
        "ad_account_id": ACCOUNT,
        "source": source,
        "received_at_ms": received,
        "raw_ref": f"conversions.raw:0:{n}:{source}",
        "event_name": name,
        "event_time": received // 1000 - delay_s,
        "ids": ids
        if ids is not None
        else {"em": ["e3b0c442"], "click_id": None, "ip_ua": "9f86d081"},
    }


def fold_all(facts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    buckets: dict[str, dict[str, Any]] = {}
    markers: dict[str, Any] = {}
    for fact in facts:
        key = d.marker_key(fact)
        buckets[fact["day"]], markers[key], _ = d.fold(
            buckets.get(fact["day"]), markers.get(key), fact
        )
    return buckets


def window(facts: list[dict[str, Any]], days: str = "1d") -> dict[str, Any]:
    return s.summarise(ACCOUNT, TODAY, fold_all(facts))["windows"][days]


def test_valid_fact_keeps_only_which_identifiers_are_present() -> None:
    fact = fact_of_valid(valid(1))
    assert fact["ids"] == ["em", "ip_ua"] and fact["day"] == TODAY and fact["delay_ms"] == 10_000
    assert "e3b0c442" not in str(fact) and "9f86d081" not in str(fact)


def test_received_is_accepted_plus_duplicates_plus_rejected() -> None:
    dead = {
        "reason": "invalid_event",
        "source_topic": "conversions.raw",
        "partition": 0,
        "offset": 9,
        "ad_account_id": ACCOUNT,
        "raw": '{"source":"tag","event":{"event_name":"checkout"}}',
    }
    audit = {"conversion_key": f"{ACCOUNT}:checkout:ev-1:online", "raw_ref": "r2"}
    facts = [
        fact_of_valid(valid(1)),
        fact_of_valid(valid(2, source="tag")),
        d.fact_of_duplicate({**audit, "source": "tag", "ad_account_id": ACCOUNT}, DAY_MS + 1),
        d.fact_of_rejected(dead, DAY_MS + 5),
    ]
    w = window([f for f in facts if f is not None])
    assert (w["received"], w["accepted"], w["duplicate"], w["rejected"]) == (3, 1, 1, 1)
    assert w["by_source"]["tag"]["rejected"] == 1
    assert w["top_reject_reasons"][0]["example"] == dead["raw"]


def test_a_redelivered_fact_is_counted_once() -> None:
    fact = fact_of_valid(valid(1))
    bucket, marker, first = d.fold(None, None, fact)
    bucket, marker, again = d.fold(bucket, marker, dict(fact))
    assert first and not again and bucket["cells"]["api|checkout"]["valid"] == 1


def test_bucket_size_does_not_grow_with_the_events_of_the_day() -> None:
    """Counters only: a changelog record must stay far below Kafka's 1 MB."""
    few = fold_all([fact_of_valid(valid(n)) for n in range(10)])[TODAY]
    many = fold_all([fact_of_valid(valid(n)) for n in range(2_000)])[TODAY]
    assert len(orjson.dumps(many)) - len(orjson.dumps(few)) < 32


def test_markers_of_a_day_are_apart_from_the_buckets_in_a_prefix_read() -> None:
    marker = d.marker_key(fact_of_valid(valid(1)))
    assert marker.startswith(d.markers_prefix(ACCOUNT, TODAY))
    assert not marker.startswith(f"{ACCOUNT}:")


def unidentified_result() -> dict[str, object]:
    """A conversions.attributed record, unidentified, version 1."""
    return {
        "conversion_key": f"{ACCOUNT}:checkout:ev-1:online",
        "ad_account_id": ACCOUNT,
        "event_name": "checkout",
        "event_time": DAY_MS // 1000,
        "status": "unidentified",
        "unidentified_reason": "no_match",
        "match": None,
        "version": 1,
    }


def test_a_newer_result_replaces_the_older_one() -> None:
    record = unidentified_result()
    later = {**record, "status": "attributed", "match": {"key_type": "em"}, "version": 2}
    w = window([d.fact_of_result(record), d.fact_of_result(later), d.fact_of_result(record)])
    assert w["match_rate"] == {"results": 1, "overall": 1.0, "by_key_type": {"em": 1.0}}


def test_rejected_input_of_another_topic_or_unknown_account_has_no_fact() -> None:
    assert d.fact_of_rejected({"reason": "x", "ad_account_id": None}, DAY_MS) is None


def test_coverage_is_the_share_of_valid_events_with_the_identifier() -> None:
    facts = [fact_of_valid(valid(n, ids={"em": ["h"]} if n < 3 else {})) for n in range(4)]
    assert window(facts)["identifier_coverage"]["em"] == 0.75


def test_redundancy_counts_keys_seen_from_both_tag_and_api() -> None:
    facts = [fact_of_valid(valid(1)), fact_of_valid(valid(1, source="tag"))]
    facts.append(fact_of_valid(valid(2, source="tag")))
    assert window(facts)["redundancy"] == {"tag_keys": 2, "api_keys": 1, "both": 1, "share": 0.5}


def test_windows_cover_1_7_and_28_days() -> None:
    old = {**valid(1), "received_at_ms": DAY_MS - 3 * 86_400_000}
    old["event_time"] = old["received_at_ms"] // 1000
    facts = [fact_of_valid(valid(2)), fact_of_valid(old)]
    assert [window(facts, w)["received"] for w in ("1d", "7d", "28d")] == [1, 2, 2]


def test_writing_a_day_marks_the_bucket_past_the_28_day_window_for_deletion() -> None:
    assert d.expired_day("2025-12-31") == "2025-12-01"


@given(st.lists(st.integers(min_value=0, max_value=10 * 86_400_000), min_size=1, max_size=200))
def test_percentiles_bound_the_true_quantile_from_above(delays: list[int]) -> None:
    histogram = [0] * (len(d.DELAY_BOUNDS_S) + 1)
    for delay in delays:
        histogram[d.delay_bin(delay)] += 1
    ordered = sorted(delays)
    for q in (0.5, 0.95):
        true_s = ordered[max(0, -(-int(q * len(ordered) * 1000) // 1000) - 1)] / 1000
        bound = s.percentile_s(histogram, q)
        assert bound is None or true_s <= bound


@given(st.lists(st.sampled_from(["api", "tag", "batch"]), min_size=1, max_size=30))
def test_counts_do_not_depend_on_redelivery(sources: list[str]) -> None:
    facts = [fact_of_valid(valid(n, source=src)) for n, src in enumerate(sources)]
    once = window(facts)
    assert window(facts + facts[::-1]) == once
    assert once["received"] == len(sources)


def test_recommends_hashed_email_when_most_events_lack_it() -> None:
    facts = [fact_of_valid(valid(n, ids={"em": ["h"]} if n < 5 else {})) for n in range(25)]
    advice = window(facts)["recommendations"]
    assert (
        "80% of checkout events lack em: sending hashed email (em) raises the match rate" in advice
    )


def test_recommends_shared_event_ids_when_tag_and_api_never_overlap() -> None:
    facts = [fact_of_valid(valid(1)), fact_of_valid(valid(2, source="tag"))]
    assert any("never share event_id" in a for a in window(facts)["recommendations"])


def test_no_recommendation_for_a_healthy_account() -> None:
    ids = {"em": ["h"], "ph": ["h"], "click_id": "c"}
    facts = [fact_of_valid(valid(n, ids=ids)) for n in range(25)]
    assert window(facts)["recommendations"] == []


@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=5), st.sampled_from(["em", "ph", None])),
        min_size=1,
        max_size=12,
    )
)
def test_match_counts_follow_the_highest_version_in_any_order(
    versions: list[tuple[int, str | None]],
) -> None:
    def result(version: int, key_type: str | None) -> dict[str, Any]:
        return {
            "conversion_key": f"{ACCOUNT}:checkout:ev-1:online",
            "ad_account_id": ACCOUNT,
            "event_name": "checkout",
            "event_time": DAY_MS // 1000,
            "status": "attributed" if key_type else "unidentified",
            "unidentified_reason": None if key_type else "no_match",
            "match": {"key_type": key_type} if key_type else None,
            "version": version,
        }

    w = window([d.fact_of_result(result(v, k)) for v, k in versions])
    first_of_highest = next(k for v, k in versions if v == max(v for v, _ in versions))
    assert w["match_rate"]["results"] == 1
    assert w["match_rate"]["overall"] == (1.0 if first_of_highest else 0.0)


def test_a_marker_whose_count_is_missing_does_not_fail_the_fold() -> None:
    """A partition rebuilt from a changelog cut between the two keys: marker, no count."""
    record = unidentified_result()
    first = d.fact_of_result(record)
    _, marker, _ = d.fold(None, None, first)
    later = d.fact_of_result({**record, "status": "attributed", "version": 2})
    bucket, _, counted = d.fold(d.empty_bucket(), marker, later)
    assert counted
    assert sum(bucket["results"].values()) == 1 and min(bucket["results"].values()) == 1
