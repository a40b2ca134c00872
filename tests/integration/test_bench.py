"""`convmesh bench --smoke` on the broker: the instrument works end to end.

Checks the report's shape and that every figure is there and positive; the figures
of 300 conversions on a shared machine say nothing, so none is compared to a target.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.procstats import broker_pids
from shared.runtime.settings import SERVICES
from tests.integration.helpers import cli_env, convmesh, free_web_port_base

LATENCIES = ("latency_attributed_ms", "latency_reports_ms")
PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


def check_push(run: dict[str, Any], conversions: int, broker_here: bool) -> None:
    assert run["conversions"] == run["accepted"] == run["results"] == conversions
    assert run["complete"] is True
    assert positive(run["conversions_per_s"])
    for name in LATENCIES:
        assert run[name]["count"] > 0, name
        for p in PERCENTILES:
            assert positive(run[name][p]), (name, p)
    per_conversion = run["records_per_conversion"]
    # Every stage of the critical path wrote; internal hops send bundles (topics.yaml),
    # so fewer Kafka records than conversions.
    for topic in ("conversions.raw", "conversions.attributed"):
        assert per_conversion[topic] >= 1.0, topic
    assert 0 < per_conversion["conversions.valid"] <= 1.0
    assert any(t.endswith("-changelog") for t in per_conversion)
    assert all(positive(n) for n in per_conversion.values())
    assert set(run["cpu_s"]) == set(SERVICES)
    assert all(positive(s) for s in run["cpu_s"].values())
    assert positive(run["cpu_ms_per_conversion"])
    assert run["load_1m"] >= 0
    assert 0 < run["machine_busy_cores"] <= (os.cpu_count() or 1)
    assert run["bench_cpu_s"] >= 0  # os.times() counts in clock ticks
    if broker_here:  # make test starts one; KAFKA_BOOTSTRAP may name another machine's
        assert positive(run["broker_cpu_s"])
        assert positive(run["broker_cpu_ms_per_conversion"])


def check_hops(run: dict[str, Any], conversions: int) -> None:
    """The fixed-rate push breaks its latency down per hop of the critical path, and
    says how long the bench's own producer waited for the broker."""
    hops = {hop["topic"]: hop for hop in run["latency_per_hop_ms"]}
    assert list(hops)[0] == "conversions.valid" and "conversions.attributed" in hops
    for topic in ("conversions.valid", "conversions.accepted", "conversions.attributed"):
        assert hops[topic]["count"] == conversions, topic
        assert positive(hops[topic]["p99_ms"]), topic
    assert run["produce_ack_ms"]["count"] == conversions
    assert positive(run["produce_ack_ms"]["p99_ms"])


def test_bench_smoke_reports_every_figure(bootstrap: str, tmp_path: Path) -> None:
    base = int(os.environ.get("CONVMESH_TEST_WEB_PORT_BASE") or free_web_port_base(7100))
    report_path = tmp_path / "bench.json"
    env = cli_env(KAFKA_BOOTSTRAP=bootstrap, CONVMESH_WEB_PORT_BASE=str(base))
    done = convmesh(
        "bench",
        "--smoke",
        "--json-out",
        str(report_path),
        "--out-dir",
        str(tmp_path),
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "conversions/s end to end" in done.stdout  # the table was printed

    report = json.loads(report_path.read_text())
    assert report["namespace"].startswith("bench-")
    assert report["config"]["smoke"] is True
    baseline = report["baseline"]
    assert baseline["delivered"] == baseline["records"] == 300
    assert baseline["warmup_records"] == 300  # the second push, not measured
    assert baseline["latency_ms"]["count"] == 300  # the measured push's records only
    assert positive(baseline["records_per_s"])
    assert positive(baseline["latency_ms"]["p99_ms"])
    pipeline = report["pipeline"]
    assert pipeline["preload"]["lag_left"] == 0
    broker_here = bool(broker_pids(bootstrap))
    check_push(pipeline["max_rate"], 300, broker_here)
    # The warm-up: the second push's last tenth, through the mesh before the measured pushes.
    assert pipeline["warmup"]["conversions"] == 30
    check_push(pipeline["fixed_rate"], 270, broker_here)
    assert positive(pipeline["fixed_rate"]["offered_per_s"])
    check_hops(pipeline["fixed_rate"], 270)
    assert positive(pipeline["max_rate"]["ratio_to_baseline"])
    assert positive(pipeline["max_rate"]["cpu_ratio_to_baseline"])
    assert positive(baseline["cpu_ms_per_record"])
    if broker_here:
        assert positive(baseline["broker_cpu_ms_per_record"])
    assert set(pipeline["peak_rss_mb"]) == set(SERVICES)
    # Bytes written to storage: 0 is possible (a data dir on tmpfs), a negative never.
    for disk in (pipeline["disk_write_mib"], pipeline["max_rate"]["disk_write_mib"]):
        assert set(disk) == set(SERVICES) and all(mib >= 0 for mib in disk.values())
    assert pipeline["disk_write_mib_all"] == round(sum(pipeline["disk_write_mib"].values()), 1)
    assert all(positive(mb) for mb in pipeline["peak_rss_mb"].values())
    for table in ("dedupe.seen", "identity_match.keys", "attribute.users"):
        sizes = report["table_sizes"][table]
        assert sizes["entries"] > 0 and positive(sizes["value_bytes"]), table
