"""The arithmetic behind `convmesh bench`'s figures (bench/figures.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import figures

STAT = (
    "4242 (python -m svc) S 1 4242 4242 0 -1 4194560 25000 0 12 0 "
    "1234 567 3 4 20 0 9 0 100 1000000 5000 18446744073709551615"
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert figures.percentile(values, 50) == 50.0
    assert figures.percentile(values, 99) == 99.0
    assert figures.percentile(values, 100) == 100.0


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(figures.percentile([], 50))


@given(st.lists(st.floats(-1e6, 1e6), min_size=1), st.floats(0.1, 100))
def test_percentile_is_one_of_the_values_and_within_their_range(
    values: list[float], pct: float
) -> None:
    p = figures.percentile(values, pct)
    assert p in values
    assert min(values) <= p <= max(values)


def test_latency_summary_orders_its_percentiles() -> None:
    summary = figures.latency_summary([float(v) for v in range(1000)])
    assert summary["count"] == 1000
    assert summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_latency_timeline_groups_samples_by_when_they_were_sent() -> None:
    samples = [(10_500.0, 40.0), (10_000.0, 20.0), (11_200.0, 900.0), (12_999.0, 30.0)]
    timeline = figures.latency_timeline(samples)
    assert [g["at_s"] for g in timeline] == [0.0, 1.0, 2.0]
    assert [g["count"] for g in timeline] == [2, 1, 1]
    assert timeline[0]["p50_ms"] == 20.0 and timeline[0]["max_ms"] == 40.0
    assert timeline[1]["max_ms"] == 900.0


def test_latency_timeline_keeps_a_second_without_sends() -> None:
    timeline = figures.latency_timeline([(0.0, 10.0), (2_500.0, 20.0)])
    assert [g["count"] for g in timeline] == [1, 0, 1]
    assert timeline[1]["p50_ms"] is None and timeline[1]["max_ms"] is None


def test_latency_timeline_of_nothing_is_empty() -> None:
    assert figures.latency_timeline([]) == []


def test_rate_counts_per_second_between_first_produce_and_last_result() -> None:
    assert figures.rate_per_s(500, 1_000, 3_000) == 250.0


def test_rate_over_no_time_is_nan_not_infinite() -> None:
    assert math.isnan(figures.rate_per_s(5, 1_000, 1_000))


def test_offset_deltas_count_new_topics_from_zero_and_drop_idle_ones() -> None:
    before = {"a": 10, "b": 5}
    after = {"a": 30, "b": 5, "c": 7}
    assert figures.offset_deltas(before, after) == {"a": 20, "c": 7}


def test_per_conversion_divides_by_accepted_conversions() -> None:
    assert figures.per_conversion({"t": 25, "u": 10}, 10) == {"t": 2.5, "u": 1.0}
    assert figures.per_conversion({"t": 25}, 0) == {}


def test_strip_namespace_of_registry_topics_and_changelogs() -> None:
    assert figures.strip_namespace("bench-1a.conversions.raw", "bench-1a") == "conversions.raw"
    assert (
        figures.strip_namespace("bench-1a-convmesh-dedupe-seen-changelog", "bench-1a")
        == "convmesh-dedupe-seen-changelog"
    )
    assert figures.strip_namespace("other.topic", "bench-1a") == "other.topic"


def test_cpu_ticks_add_user_and_system_time_even_with_spaces_in_comm() -> None:
    assert figures.cpu_ticks(STAT) == 1234 + 567


def test_vm_hwm_reads_the_peak_resident_set() -> None:
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\n"
    assert figures.vm_hwm_kb(status) == 123456
    assert figures.vm_hwm_kb("Name:\tkthread\n") == 0


def test_sum_and_max_by_service_fold_several_workers() -> None:
    pairs = [("attribute", 2.0), ("attribute", 3.0), ("dedupe", 1.0)]
    assert figures.sum_by_service(pairs) == {"attribute": 5.0, "dedupe": 1.0}
    assert figures.max_by_service(pairs) == {"attribute": 3.0, "dedupe": 1.0}


def test_parse_workers_of() -> None:
    assert figures.parse_workers_of(["attribute=2", "dedupe=4"]) == {"attribute": 2, "dedupe": 4}


@pytest.mark.parametrize("spec", ["attribute", "attribute=", "=2", "attribute=two"])
def test_parse_workers_of_rejects_malformed_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="SERVICE=N"):
        figures.parse_workers_of([spec])


def test_state_sizes_measure_the_latest_live_value_per_key() -> None:
    records = [(b"k1", b"x" * 10), (b"k1", b"x" * 30), (b"k22", b"y" * 50), (b"k3", b"z")]
    records.append((b"k3", None))  # deleted: not live
    assert figures.state_sizes(records) == {"entries": 2, "key_bytes": 2.5, "value_bytes": 40.0}


def test_state_sizes_of_an_empty_changelog() -> None:
    assert figures.state_sizes([])["entries"] == 0


def test_status_kb_reads_every_kilobyte_field_and_nothing_else() -> None:
    status = "Name:\tpython\nVmHWM:\t  2048 kB\nRssAnon:\t  1024 kB\nThreads:\t9\n"
    assert figures.status_kb(status) == {"VmHWM": 2048, "RssAnon": 1024}


PROC_STAT = "cpu  100 5 50 800 20 3 2 0 7 0\ncpu0 50 2 25 400 10 1 1 0 0 0\nintr 1 2\n"


def test_machine_ticks_count_idle_and_iowait_as_the_only_ticks_not_busy() -> None:
    """Guest time is already in user and nice, so it is not counted twice."""
    assert figures.machine_ticks(PROC_STAT) == (160, 980)


def test_busy_cores_is_the_busy_share_of_the_ticks_times_the_cores() -> None:
    assert figures.busy_cores((160, 980), (160 + 150, 980 + 200), 2) == 1.5
    assert figures.busy_cores((160, 980), (160, 980), 2) == 0.0


HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt uid inode\n"
TAIL = " 00000000:00000000 00:00000000 00000000     0        0"
TCP = (
    HEADER
    + f"   0: 0100007F:2384 00000000:0000 0A{TAIL} 4711 1 0 100 0 0 10 0\n"
    + f"   1: 0100007F:2385 00000000:0000 0A{TAIL} 4712 1 0 100 0 0 10 0\n"
    + f"   2: 0100007F:2384 0100007F:D3F2 01{TAIL} 4713 1 0 20 4 30 10 -1\n"
)
ANY6 = "0" * 32
TCP6 = HEADER + f"   0: {ANY6}:2384 {ANY6}:0000 0A{TAIL} 4714 1 0 100 0 0 10 0\n"


def test_listening_inodes_are_the_listen_sockets_of_the_port_only() -> None:
    """Port 9092 is 2384 in hex: the socket on 9093 and the connection to 9092 are not it."""
    assert figures.listening_inodes(TCP, 9092) == {4711}
    assert figures.listening_inodes(TCP6, 9092) == {4714}
    assert figures.listening_inodes(TCP, 9094) == set()


def test_per_item_ms_divides_and_keeps_an_unmeasured_cpu_unmeasured() -> None:
    assert figures.per_item_ms(1.5, 1000) == 1.5
    assert figures.per_item_ms(None, 1000) is None
    assert figures.per_item_ms(0.5, 0) == 500.0


def test_io_write_bytes_reads_what_reached_storage_not_the_sockets() -> None:
    io = "rchar: 900\nwchar: 800\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 12288\n"
    assert figures.io_write_bytes(io) == 12288
    assert figures.io_write_bytes("rchar: 1\n") == 0
