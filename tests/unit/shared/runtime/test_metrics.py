"""shared.runtime.metrics: names, per-app registries, the batching loop's counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from shared.runtime.metrics import (
    Metrics,
    WorkerCollector,
    metric_name,
    metrics_of,
    observe_many,
    received_at_ms,
    registry_topic,
)
from tests.support.harness import Harness


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counter_names_end_in_total_once() -> None:
    assert metric_name("records_in", counter=True) == "convmesh_records_in_total"
    assert metric_name("convmesh_records_in_total", counter=True) == "convmesh_records_in_total"


def test_units_are_suffixed_once() -> None:
    assert metric_name("batch_processing", "seconds") == "convmesh_batch_processing_seconds"
    assert metric_name("rocksdb_disk_bytes", "bytes") == "convmesh_rocksdb_disk_bytes"


@pytest.mark.parametrize("bad", ["Records", "records-in", "1x", ""])
def test_names_outside_the_conventions_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        metric_name(bad)


@given(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True))
def test_every_name_starts_with_the_prefix(name: str) -> None:
    assert metric_name(name).startswith("convmesh_")
    assert metric_name(name, counter=True).endswith("_total")


def test_every_exposed_metric_is_ours() -> None:
    metrics = Metrics()
    metrics.record_in("conversions.raw")
    names = {name for name, _ in samples(metrics)}
    assert names and all(n.startswith("convmesh_") for n in names)


def test_two_apps_have_separate_registries() -> None:
    class App:
        pass

    first, second = App(), App()
    metrics_of(first).record_in("conversions.raw")
    assert metrics_of(first) is metrics_of(first)
    assert ("convmesh_records_in_total", (("topic", "conversions.raw"),)) not in samples(
        metrics_of(second)
    )


def test_received_at_is_read_from_dicts_and_bytes() -> None:
    assert received_at_ms({"received_at_ms": 5}) == 5
    assert received_at_ms(b'{"a":1,"received_at_ms": 1764151200000}') == 1764151200000
    assert received_at_ms(b"{}") is None
    assert received_at_ms(None) is None


def test_an_output_carrying_received_at_is_a_latency_sample() -> None:
    metrics = Metrics()
    metrics.records_out_of_batch({"conversions.valid": 1}, {"conversions.valid": [1_000]}, 3_500)
    got = samples(metrics)
    key = ("convmesh_end_to_end_latency_seconds_sum", (("topic", "conversions.valid"),))
    assert got[key] == 2.5


def test_a_garbage_collector_pause_is_a_sample_of_its_generation() -> None:
    metrics = Metrics()
    metrics.gc_paused(2, 0.2)
    metrics.gc_paused(2, 0.1)
    got = samples(metrics)
    assert got[("convmesh_gc_pause_seconds_count", (("generation", "2"),))] == 2
    assert got[("convmesh_gc_pause_seconds_sum", (("generation", "2"),))] == pytest.approx(0.3)


def test_a_published_result_counts_its_touch_type() -> None:
    metrics = Metrics()
    metrics.published_result(
        {"status": "attributed", "match": {"key_type": "em"}, "touch": {"type": "click"}}
    )
    metrics.published_result({"status": "unidentified", "match": None, "touch": None})
    metrics.published_result(None)  # a tombstone is no outcome
    got = samples(metrics)
    assert got[("convmesh_attribution_outcomes_total", (("touch_type", "click"),))] == 1
    assert got[("convmesh_attribution_outcomes_total", (("touch_type", "none"),))] == 1


def test_a_match_outcome_is_counted_per_key_type() -> None:
    metrics = Metrics()
    metrics.match("em", "matched")
    metrics.match("", "unidentified")
    got = samples(metrics)
    assert got[("convmesh_match_outcomes_total", (("key_type", "em"), ("outcome", "matched")))] == 1
    none = (("key_type", "none"), ("outcome", "unidentified"))
    assert got[("convmesh_match_outcomes_total", none)] == 1


def test_repeated_hooks_add_up_per_label_set() -> None:
    """The kept label children count for their own labels only."""
    metrics = Metrics()
    metrics.record_in("conversions.raw", 3)
    metrics.record_in("conversions.raw")
    metrics.record_in("conversions.valid")
    metrics.reject("invalid_json", "conversions.raw")
    metrics.reject("invalid_json", "conversions.valid")
    got = samples(metrics)
    assert got[("convmesh_records_in_total", (("topic", "conversions.raw"),))] == 4
    assert got[("convmesh_records_in_total", (("topic", "conversions.valid"),))] == 1
    raw = (("reason", "invalid_json"), ("topic", "conversions.raw"))
    assert got[("convmesh_rejects_total", raw)] == 1


def test_the_namespace_is_removed_from_topic_labels() -> None:
    assert registry_topic("t-1.conversions.raw", "t-1") == "conversions.raw"
    assert registry_topic("conversions.raw", "") == "conversions.raw"


def test_scrape_time_gauges(tmp_path: Path) -> None:
    (tmp_path / "000001.sst").write_bytes(b"x" * 10)
    metrics = Metrics()
    metrics.add_collector(
        WorkerCollector(lambda: [("conversions.raw", 2, 7)], lambda: [("seen", 3)], tmp_path)
    )
    got = samples(metrics)
    lag = (("partition", "2"), ("topic", "conversions.raw"))
    assert got[("convmesh_consumer_lag_records", lag)] == 7
    assert got[("convmesh_table_keys", (("table", "seen"),))] == 3
    assert got[("convmesh_rocksdb_disk_bytes", ())] == 10


async def test_the_batching_loop_counts_in_out_and_rejects() -> None:
    h = Harness()
    outbox = h.outbox("conversions.valid")

    async def handler(event: object) -> None:
        message = event.message  # type: ignore[attr-defined]
        if message.value == b"bad":
            raise ValueError("boom")
        await outbox.send("conversions.valid", message.key, {"received_at_ms": 0})

    events = [h.record("conversions.raw", "k", b"{}"), h.record("conversions.raw", "k", b"bad")]
    await h.run(handler, events, outbox=outbox)
    got = samples(outbox.metrics)
    assert got[("convmesh_records_in_total", (("topic", "conversions.raw"),))] == 2
    assert got[("convmesh_records_out_total", (("topic", "conversions.valid"),))] == 1
    reject = (("reason", "processing_error"), ("topic", "conversions.raw"))
    assert got[("convmesh_rejects_total", reject)] == 1
    assert got[("convmesh_batch_processing_seconds_count", ())] == 1


def test_table_keys_come_from_rocksdb_without_walking_the_table(tmp_path: Path) -> None:
    """A RocksDB-backed table is counted by each partition database's estimate."""
    from types import SimpleNamespace

    from rocksdict import Rdict

    from shared.runtime.metrics import table_keys

    dbs = {p: Rdict(str(tmp_path / f"p{p}")) for p in (0, 1)}
    try:
        for i in range(5):
            dbs[i % 2][f"k{i}".encode()] = b"v"

        def walk() -> None:
            raise AssertionError("the table was walked")

        table = SimpleNamespace(data=SimpleNamespace(_dbs=dbs), keys=walk)
        assert table_keys(table) == 5
        assert table_keys(SimpleNamespace(keys=lambda: iter([b"a", b"b"]))) == 2
    finally:
        for db in dbs.values():
            db.close()


@given(st.lists(st.floats(min_value=0, max_value=4000, allow_nan=False), max_size=40))
def test_observing_many_amounts_at_once_is_observing_each(amounts: list[float]) -> None:
    """observe_many fills the same buckets, count and sum as observe, amount by amount."""
    one_by_one, at_once = Metrics(), Metrics()
    child = one_by_one._child(one_by_one.latency, "t")
    for amount in amounts:
        child.observe(amount)
    observe_many(at_once._child(at_once.latency, "t"), amounts)
    expected, got = samples(one_by_one), samples(at_once)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)


def test_an_amount_on_a_bucket_bound_falls_in_that_bucket() -> None:
    metrics = Metrics()
    observe_many(metrics._child(metrics.latency, "t"), [0.05, 0.05000001])
    got = samples(metrics)
    bucket = "convmesh_end_to_end_latency_seconds_bucket"
    assert got[(bucket, (("le", "0.05"), ("topic", "t")))] == 1
    assert got[(bucket, (("le", "0.1"), ("topic", "t")))] == 2


def test_a_batch_of_outputs_counts_its_records_and_latency_samples_per_topic() -> None:
    metrics = Metrics()
    metrics.records_out_of_batch(
        {"conversions.valid": 3, "conversions.dlq": 1}, {"conversions.valid": [1_000, 2_000]}, 3_000
    )
    got = samples(metrics)
    assert got[("convmesh_records_out_total", (("topic", "conversions.valid"),))] == 3
    assert got[("convmesh_records_out_total", (("topic", "conversions.dlq"),))] == 1
    valid = (("topic", "conversions.valid"),)
    assert got[("convmesh_end_to_end_latency_seconds_count", valid)] == 2
    assert got[("convmesh_end_to_end_latency_seconds_sum", valid)] == 3.0
