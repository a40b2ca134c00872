"""The pure parts of bench/pipeline.py: workload split, consumer groups, report latency."""

from __future__ import annotations

import orjson
import pytest

from bench import pipeline
from bench.kafka_probe import Seen
from shared.contract.report_deltas import row_key, row_of
from shared.runtime.settings import Settings


def test_bench_workload_gives_two_pushes_of_distinct_accepted_conversions() -> None:
    _, pushes = pipeline.bench_workload(40, seed=3)
    first, second = pushes
    assert len(first) == len(second) == 40
    keys = [i.result_key for i in first + second]
    assert len(set(keys)) == 80  # no conversion is a duplicate of another
    assert all(k for k in keys)


def test_the_warm_up_is_the_second_push_tail_and_the_fixed_rate_push_the_rest() -> None:
    _, pushes = pipeline.bench_workload(40, seed=3)
    warmup, fixed = pipeline.split_off_warmup(pushes[1], 4)
    assert [i.result_key for i in fixed + warmup] == [i.result_key for i in pushes[1]]
    assert len(warmup) == 4
    # Nothing of the measured full-speed push is warmed up.
    assert not {i.result_key for i in warmup} & {i.result_key for i in pushes[0]}


@pytest.mark.parametrize("warmup", [-1, 40, 41])
def test_a_warm_up_outside_a_push_is_refused(warmup: int) -> None:
    with pytest.raises(ValueError, match="--warmup"):
        pipeline.BenchConfig(conversions=40, warmup=warmup)


def test_no_warm_up_leaves_the_second_push_whole() -> None:
    _, pushes = pipeline.bench_workload(10, seed=3)
    warmup, fixed = pipeline.split_off_warmup(pushes[1], 0)
    assert warmup == [] and fixed == pushes[1]


def test_context_records_leave_the_conversions_out_and_use_namespaced_topics() -> None:
    workload, _ = pipeline.bench_workload(20, seed=3)
    settings = Settings.from_env(env={"CONVMESH_NAMESPACE": "bench-x"})
    records = pipeline.context_records(workload, settings)
    assert records
    assert all(t.startswith("bench-x.") for t, _, _ in records)
    assert "bench-x.conversions.raw" not in {t for t, _, _ in records}


def test_consumer_groups_follow_the_registry_consumers() -> None:
    settings = Settings.from_env(env={"CONVMESH_NAMESPACE": "bench-x"})
    groups = pipeline.consumer_groups(settings)
    assert "bench-x.identity.signals" in groups["bench-x-convmesh-identity_match"]
    assert "bench-x.ads.engagements" in groups["bench-x-convmesh-attribute"]
    # Read whole outside the group: waiting on its lag would never end.
    assert all("accounts.settings" not in t for ts in groups.values() for t in ts)


def _result(key: str) -> bytes:
    return orjson.dumps(
        {
            "conversion_key": key,
            "ad_account_id": "1",
            "event_name": "checkout",
            "event_time": 1_764_151_200,
            "status": "unattributed",
            "touch": None,
        }
    )


def test_report_latency_takes_the_first_row_update_at_or_after_the_result() -> None:
    value = _result("k1")
    row = row_key(row_of(orjson.loads(value)))
    reports = [Seen(row, 900, b""), Seen(row, 1_300, b""), Seen(row, 1_500, b"")]
    latencies = pipeline.latencies_to_reports({"k1": (1_200, value)}, reports, {"k1": 1_000})
    assert latencies == [300.0]


def test_report_latency_skips_a_conversion_whose_row_was_not_written_yet() -> None:
    value = _result("k1")
    assert pipeline.latencies_to_reports({"k1": (1_200, value)}, [], {"k1": 1_000}) == []
