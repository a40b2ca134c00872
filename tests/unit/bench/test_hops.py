"""The per-hop latency breakdown of `convmesh bench` (bench/hops.py)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bench import hops
from shared.kafka.topic_io import Read


def read(key: str | None, value: object, ts: int) -> Read:
    return Read(0, 0, key.encode() if key else None, orjson.dumps(value), ts)


def test_conversion_key_comes_from_the_value_when_it_has_one() -> None:
    """identity.lookups is keyed by identifier; its value names the conversion."""
    assert hops.conversion_key_of(read("ident-hash", {"conversion_key": "c1"}, 0)) == "c1"


def test_conversion_key_falls_back_to_the_record_key() -> None:
    assert hops.conversion_key_of(read("c2", {"status": "matched"}, 0)) == "c2"


def test_undecodable_value_falls_back_to_the_record_key() -> None:
    assert hops.conversion_key_of(Read(0, 0, b"c3", b"\xff not json", 0)) == "c3"


def test_first_stamps_keep_the_earliest_record_of_wanted_conversions() -> None:
    reads = [
        read("a", {"conversion_key": "c1"}, 30),
        read("b", {"conversion_key": "c1"}, 20),
        read("c", {"conversion_key": "other"}, 5),
    ]
    assert hops.first_stamps(reads, {"c1": 0}) == {"c1": 20}


def test_hop_latency_is_time_since_the_stage_before() -> None:
    stages = [{"c1": 110}, {"c1": 150}, {"c1": 400}]
    assert hops.hop_latencies({"c1": 100}, stages) == [[10.0], [40.0], [250.0]]


def test_a_skipped_stage_counts_from_the_last_stage_reached() -> None:
    """Unidentified conversions never reach attribution.assignments."""
    stages = [{"c1": 110}, {}, {"c1": 400}]
    assert hops.hop_latencies({"c1": 100}, stages) == [[10.0], [], [290.0]]


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=8))
def test_hops_add_up_to_the_end_to_end_latency(gaps: list[int]) -> None:
    stamps, at = [], 1_000
    for gap in gaps:
        at += gap
        stamps.append({"c": at})
    per_hop = hops.hop_latencies({"c": 1_000}, stamps)
    assert sum(h[0] for h in per_hop) == at - 1_000
