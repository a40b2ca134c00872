"""`convmesh bench`: the mesh against the bare-Kafka limit, in one run.

1. Baseline: N envelopes through a chain of plain aiokafka relays (bench/relays.py),
   one process per stage of a conversion's critical path, over topics with the
   pipeline's partition count; the mesh is not running yet.
2. The mesh (ops/mesh.py ``up``) in a fresh namespace, development mode.
3. Identity signals, engagements and privacy requests of an ``ops.workload`` workload;
   wait until every consumer group has committed them.
4. A warm-up of W other conversions, not measured (``--warmup``; a tenth of N, at most
   1,000): every topic and changelog on their path gets its first records before the
   measured pushes, as the relays' topics do in their own warm-up.
5. N conversions at full speed, then N - W other conversions at a fixed offered rate
   (half the measured maximum unless given). Per push: conversions/s, latency from
   ``received_at_ms`` to the CreateTime of the result, records written per accepted
   conversion on every topic and changelog, CPU seconds per service.
6. Peak RSS per service, the mesh stopped, the namespace's topics deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import figures
from bench.baseline import run_baseline
from bench.hops import hop_breakdown
from bench.kafka_probe import (
    Collector,
    Item,
    Offsets,
    produce_all,
    push,
    wait_consumed,
    wait_for,
)
from bench.procstats import (
    broker_pids,
    cpu_delta,
    cpu_seconds,
    disk_write_bytes,
    disk_write_mib,
    git_commit,
    load_1m,
    machine_ticks,
    own_cpu_s,
    peak_rss_mb,
    start_profiles,
    stop_profiles,
    worker_pids,
)
from ops import mesh
from ops.workload import RAW, Workload, default_now_ms, generate
from shared.contract.report_deltas import row_key, row_of
from shared.kafka.registry_access import registry_for
from shared.kafka.topic_io import read_all
from shared.runtime.settings import REPO_ROOT, SERVICES, Settings

ATTRIBUTED = "conversions.attributed"
REPORTS = "reports.conversions"

#: The default warm-up's largest size (``default_warmup``).
MAX_DEFAULT_WARMUP = 1_000
#: (CreateTime ms, value) of a conversion's first result
Stamped = tuple[int, bytes]


@dataclass(frozen=True)
class BenchConfig:
    conversions: int = 20_000
    workers: int = 1
    workers_of: dict[str, int] = field(default_factory=dict)
    rate: float | None = None
    seed: int = 7
    smoke: bool = False
    baseline: bool = True
    fixed_rate: bool = True
    profile: tuple[str, ...] = ()
    profile_seconds: float | None = None
    keep_topics: bool = False
    #: Conversions pushed, unmeasured, before the measured pushes (None: ``default_warmup``).
    warmup: int | None = None
    stall_s: float = 90.0
    out_dir: Path = REPO_ROOT / "var" / "bench"

    def __post_init__(self) -> None:
        if self.warmup is not None and not 0 <= self.warmup < self.conversions:
            raise ValueError(
                f"--warmup must be at least 0 and less than a push ({self.conversions})"
            )

    def workers_per_service(self) -> dict[str, int]:
        return {s: self.workers_of.get(s, self.workers) for s in SERVICES}

    def warmup_size(self) -> int:
        return default_warmup(self.conversions) if self.warmup is None else self.warmup


def default_warmup(conversions: int) -> int:
    """A tenth of a push, at most 1,000 (none below 10 conversions). At the full size
    that gives every partition of the conversions' path its first records, and is
    little beside the measured pushes; a smoke run's 30 may miss a partition."""
    return min(MAX_DEFAULT_WARMUP, conversions // 10)


def add_warmup_option(parser: argparse.ArgumentParser, where: str) -> None:
    """``--warmup`` of the bench modules (``convmesh bench`` defines its own: the ops image
    has no bench/); checked by ``refuse_bad_warmup``."""
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"conversions through the mesh {where} (a tenth of a push, at most 1000; 0: none)",
    )


def refuse_bad_warmup(
    parser: argparse.ArgumentParser, conversions: int, warmup: int | None
) -> None:
    """Exit with the parser's error when ``warmup`` is outside ``BenchConfig``'s bounds:
    before any mesh starts or any state loads."""
    try:
        BenchConfig(conversions=conversions, warmup=warmup)
    except ValueError as exc:
        parser.error(str(exc))


def split_off_warmup(second: list[Item], warmup: int) -> tuple[list[Item], list[Item]]:
    """The warm-up (the second push's last ``warmup`` conversions) and what is left of
    the second push for the fixed rate: no conversion is pushed twice."""
    cut = len(second) - min(warmup, len(second))
    return second[cut:], second[:cut]


Say = Callable[[str], None]


# ------------------------------------------------------------------ workload
def bench_workload(conversions: int, seed: int) -> tuple[Workload, list[list[Item]]]:
    """A workload of 2 x N distinct accepted conversions (no duplicates or invalid
    records: every record pushed is one conversion), split in two pushes."""
    workload = generate(
        seed,
        2 * conversions,
        now_ms=default_now_ms(),
        ad_accounts=3,
        duplicate_fraction=0.0,
        other_scope_fraction=0.0,
        supersede_fraction=0.0,
        invalid_fraction=0.0,
    )
    items = [
        Item(rec.key, orjson.loads(rec.value), label.conversion_key or "")
        for rec, label in zip(workload.records[RAW], workload.raw_labels, strict=True)
        if label.expect == "accepted"
    ]
    return workload, [items[:conversions], items[conversions : 2 * conversions]]


def context_records(
    workload: Workload, settings: Settings
) -> list[tuple[str, bytes | None, bytes]]:
    return [
        (settings.topic_name(r.topic), r.key, r.value)
        for r in workload.ordered("context_first")
        if r.topic != RAW
    ]


def consumer_groups(settings: Settings) -> dict[str, list[str]]:
    """Each service's consumer group -> the partitioned topics it consumes (registry)."""
    groups: dict[str, list[str]] = {}
    for spec in registry_for(settings):
        if spec.kind not in ("input", "internal") or spec.partitions == 1:
            continue  # one-partition topics are read whole, outside the group
        for consumer in spec.consumers:
            service = consumer.split(" ")[0]
            if service in SERVICES:
                app_id = Settings(service=service, namespace=settings.namespace).app_id
                groups.setdefault(app_id, []).append(settings.topic_name(spec.name))
    return groups


# ------------------------------------------------------------------- pipeline
def latencies_to_reports(
    attributed_first: dict[str, Stamped], reports: Sequence[Any], sent_at: dict[str, int]
) -> list[float]:
    """Per conversion: its received_at_ms to the first reports.conversions record of its
    row written at or after its result (the publisher sends a result's deltas with it,
    and aggregate applies them in order, so that record is the first one that can
    count it)."""
    by_row: dict[str, list[int]] = {}
    for seen in reports:
        by_row.setdefault(seen.key, []).append(seen.timestamp_ms)
    for stamps in by_row.values():
        stamps.sort()
    out = []
    for key, (ts, value) in attributed_first.items():
        stamps = by_row.get(row_key(row_of(orjson.loads(value))), [])
        i = bisect.bisect_left(stamps, ts)
        if i < len(stamps):
            out.append(float(stamps[i] - sent_at[key]))
    return out


def first_results(collector: Collector, wanted: dict[str, int]) -> dict[str, Stamped]:
    first: dict[str, Stamped] = {}
    for seen in collector.records[collector.topics[0]]:
        if seen.key in wanted and seen.key not in first:
            first[seen.key] = (seen.timestamp_ms, seen.value)
    return first


async def measure_push(
    settings: Settings,
    label: str,
    items: Sequence[Item],
    rate: float | None,
    collector: Collector,
    probe: Offsets,
    pids: Sequence[tuple[str, int]],
    config: BenchConfig,
    say: Say,
) -> dict[str, Any]:
    attributed, reports = settings.topic_name(ATTRIBUTED), settings.topic_name(REPORTS)
    wanted = {i.result_key for i in items}
    # The broker shares the machine: its CPU per conversion is the mesh's cost too.
    brokers = broker_pids(settings.bootstrap)
    offsets0, cpu0, load = await probe.topic_totals(), cpu_seconds(pids), load_1m()
    disk0 = disk_write_bytes(pids)
    speed = f"{rate:.0f}/s" if rate else "full speed"
    say(f"{label}: {len(items)} conversions at {speed} (load {load})")
    # Both pushes: at a fixed rate the per-batch and per-fetch costs weigh most.
    profiler = start_profiles(
        settings, pids, label, config.profile, config.out_dir, config.profile_seconds
    )
    acked: list[float] = []
    # From the first send: the profilers' start is not the push's.
    machine0, own0, broker0 = machine_ticks(), own_cpu_s(), cpu_seconds(brokers)
    first, last_sent, sent_at = await push(
        settings.bootstrap, settings.topic_name(RAW), items, rate, acked
    )
    got, done = await wait_for(
        lambda: collector.distinct_keys(attributed, wanted), len(wanted), config.stall_s
    )
    # The push's window (first send to last result), not the settling after it: the
    # broker's CPU over the same window as the relays', whatever it does afterwards.
    machine1, own1, broker1 = machine_ticks(), own_cpu_s(), cpu_seconds(brokers)
    stop_profiles(profiler)
    settled = await probe.wait_settled(timeout_s=60)
    cpu1, offsets1 = cpu_seconds(pids), await probe.topic_totals()
    disk1 = disk_write_bytes(pids)
    firsts = first_results(collector, sent_at)
    last = max(ts for ts, _ in firsts.values())
    sent_and_latency = [(float(sent_at[k]), float(t - sent_at[k])) for k, (t, _) in firsts.items()]
    lat_attr = [latency for _, latency in sent_and_latency]
    lat_reports = latencies_to_reports(firsts, collector.records[reports], sent_at)
    cpu = cpu_delta(pids, cpu0, cpu1)
    broker_cpu = cpu_delta(brokers, broker0, broker1).get("broker")
    # At a fixed rate the latency is the hops' own (no queue to drain): where it goes.
    hops = (
        await hop_breakdown(settings, {k: sent_at[k] for k in firsts}) if rate is not None else []
    )
    deltas = figures.offset_deltas(offsets0, offsets1)
    per_conv = figures.per_conversion(
        {figures.strip_namespace(t, settings.namespace): d for t, d in deltas.items()}, len(wanted)
    )
    return {
        "conversions": len(items),
        "accepted": len(wanted),
        "results": got,
        "complete": done,
        "settled": settled,
        "offered_per_s": round(rate, 1) if rate else None,
        "produce_seconds": round((last_sent - first) / 1000, 2),
        "conversions_per_s": round(figures.rate_per_s(got, first, last), 1),
        "latency_attributed_ms": figures.latency_summary(lat_attr),
        "latency_reports_ms": figures.latency_summary(lat_reports),
        "latency_per_hop_ms": hops,
        "latency_attributed_by_second": figures.latency_timeline(sent_and_latency),
        "produce_ack_ms": figures.latency_summary(acked),
        "records_per_conversion": per_conv,
        "records_per_conversion_total": round(sum(per_conv.values()), 2),
        "cpu_s": cpu,
        # CPU per conversion hardly depends on what else runs on the machine; the
        # rates above do (docs/benchmarks.md, "Noise").
        "cpu_ms_per_conversion": figures.per_item_ms(sum(cpu.values()), len(wanted)),
        # RocksDB's write-ahead log and flushes, and the workers' logs: what the
        # stores cost the disk (CONVMESH_ROCKSDB_WAL).
        "disk_write_mib": disk_write_mib(pids, disk0, disk1),
        "broker_cpu_s": broker_cpu,
        "broker_cpu_ms_per_conversion": figures.per_item_ms(broker_cpu, len(wanted)),
        "load_1m": load,
        # How full the machine was (all processes: services, broker, this bench); at a
        # fixed rate the latency's tail is queueing for a core.
        "machine_busy_cores": figures.busy_cores(machine0, machine1, os.cpu_count() or 1),
        "bench_cpu_s": round(own1 - own0, 2),
        "profiles": [str(p) for _, p in profiler],
    }


async def warm_up(
    settings: Settings,
    items: Sequence[Item],
    collector: Collector,
    probe: Offsets,
    config: BenchConfig,
    say: Say,
) -> dict[str, Any]:
    """``items`` through the mesh at full speed, not measured, before the measured pushes.

    The namespace's topics are new, so without it the measured push would be the first
    to write to most partitions of the conversions' path. The broker pays for a
    partition's first records once: its segment's index files, mapped in memory, are
    faulted in then. On this machine (a read-ahead of 8 MiB) that was 0.47 CPU s of
    the broker in the push's first two seconds of a profiled run, 11% of its CPU over
    the push (docs/benchmarks.md, "A warm-up for the mesh"). A running mesh pays it once per
    segment; the relays' topics get their own warm-up (``bench.baseline``).
    """
    if not items:
        return {"conversions": 0, "seconds": 0.0}
    attributed = settings.topic_name(ATTRIBUTED)
    wanted = {i.result_key for i in items}
    say(f"warm-up: {len(items)} conversions, not measured")
    t0 = time.monotonic()
    await push(settings.bootstrap, settings.topic_name(RAW), items, None)
    _, done = await wait_for(
        lambda: collector.distinct_keys(attributed, wanted), len(wanted), config.stall_s
    )
    # Its late records would be counted in the measured push's window.
    if not done:
        raise RuntimeError("the mesh's warm-up conversions did not come through")
    if not await probe.wait_settled(timeout_s=60):
        raise RuntimeError("the mesh did not settle after its warm-up conversions")
    return {"conversions": len(items), "seconds": round(time.monotonic() - t0, 1)}


def start_mesh(settings: Settings, config: BenchConfig) -> dict[str, int]:
    workers = config.workers_per_service()
    mesh.up(settings, workers=config.workers)
    # --workers-of: more workers of one service (ops/mesh.py starts N of every service).
    extra = [(s, w) for s, n in workers.items() for w in range(config.workers, n)]
    if extra:
        mesh._check_ports_free(settings, extra)
        for service, worker in extra:
            mesh._start_worker(settings, service, worker)
        mesh._wait_ready(settings, extra, 180.0)
    return workers


async def run_pipeline(
    settings: Settings,
    workload: Workload,
    pushes: list[list[Item]],
    workers: dict[str, int],
    config: BenchConfig,
    say: Say,
) -> dict[str, Any]:
    pids = worker_pids(settings, workers)
    probe = Offsets(settings.bootstrap, settings.namespace)
    await probe.start()
    collector = Collector(
        settings.bootstrap, [settings.topic_name(ATTRIBUTED), settings.topic_name(REPORTS)]
    )
    await collector.start()
    try:
        context = context_records(workload, settings)
        load, cpu0, disk0 = load_1m(), cpu_seconds(pids), disk_write_bytes(pids)
        t0 = time.monotonic()
        await produce_all(settings.bootstrap, context)
        lag = await wait_consumed(probe, consumer_groups(settings), config.stall_s)
        preload = {
            "records": len(context),
            "seconds": round(time.monotonic() - t0, 1),
            "lag_left": lag,
            "load_1m": load,
            # Identity signals and engagements cost CPU too: needed to size a deployment.
            "cpu_s": cpu_delta(pids, cpu0, cpu_seconds(pids)),
        }
        say(f"preload: {len(context)} context records consumed in {preload['seconds']} s")
        await probe.wait_settled(timeout_s=60)
        warmup, fixed = split_off_warmup(pushes[1], config.warmup_size())
        warmed = await warm_up(settings, warmup, collector, probe, config, say)
        runs = {
            "max_rate": await measure_push(
                settings, "max", pushes[0], None, collector, probe, pids, config, say
            )
        }
        if config.fixed_rate:
            rate = config.rate or max(1.0, runs["max_rate"]["conversions_per_s"] / 2)
            runs["fixed_rate"] = await measure_push(
                settings, "fixed", fixed, rate, collector, probe, pids, config, say
            )
        return {
            "preload": preload,
            "warmup": warmed,
            **runs,
            "peak_rss_mb": peak_rss_mb(pids),
            # From the preload to the last push's settling.
            "disk_write_mib": (disk := disk_write_mib(pids, disk0, disk_write_bytes(pids))),
            "disk_write_mib_all": round(sum(disk.values()), 1),
        }
    finally:
        await collector.stop()
        await probe.stop()


async def table_sizes(settings: Settings) -> dict[str, dict[str, float]]:
    """Entries and mean key/value bytes of every table, read from its changelog."""
    registry = registry_for(settings)
    out = {}
    for service in SERVICES:
        app_id = Settings(service=service, namespace=settings.namespace).app_id
        for table in registry.tables_of(service):
            reads = await read_all(settings, table.changelog_name(app_id), 120.0)
            out[f"{service}.{table.table}"] = figures.state_sizes((r.key, r.value) for r in reads)
    return out


async def delete_topics(settings: Settings) -> list[str]:
    probe = Offsets(settings.bootstrap, settings.namespace)
    await probe.start()
    try:
        return await probe.delete_namespace()
    finally:
        await probe.stop()


def drop_namespace(settings: Settings, say: Say = print) -> None:
    """Delete a finished run's topics, so that runs do not pile up on a shared broker
    (the state runs write gigabytes); a broker that is gone is only reported."""
    try:
        asyncio.run(delete_topics(settings))
    except Exception as exc:  # noqa: BLE001 - the broker may be why the run ended
        say(f"topics of {settings.namespace} not deleted: {exc!r}")


def run(config: BenchConfig, say: Say = print) -> dict[str, Any]:
    """The whole benchmark; returns the report (see docs/benchmarks.md)."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    data_dir = config.out_dir / namespace
    os.environ.update(
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DEV_MODE="true",
        CONVMESH_DATA_DIR=str(data_dir),
    )
    settings = Settings.from_env()
    report: dict[str, Any] = {
        "schema": 1,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "namespace": namespace,
        "machine": {"cpus": os.cpu_count(), "load_1m_at_start": load_1m()},
        "config": {**asdict(config), "out_dir": str(config.out_dir)},
    }
    say(f"workload: 2 x {config.conversions} conversions (seed {config.seed})")
    workload, pushes = bench_workload(config.conversions, config.seed)
    try:
        if config.baseline:
            # Warmed up with the second push: other conversions, on the relays' own topics.
            report["baseline"] = asyncio.run(
                run_baseline(settings, pushes[0], config.stall_s, say, warmup=pushes[1])
            )
        say(
            "mesh: starting "
            + ", ".join(f"{s}x{n}" for s, n in config.workers_per_service().items())
        )
        workers = start_mesh(settings, config)
        report["workers"] = workers
        report["pipeline"] = asyncio.run(
            run_pipeline(settings, workload, pushes, workers, config, say)
        )
        report["table_sizes"] = asyncio.run(table_sizes(settings))
    finally:
        mesh.down(settings)
        if not config.keep_topics:
            drop_namespace(settings, say)
    # Kept when the run failed: the workers' logs are in it.
    shutil.rmtree(data_dir, ignore_errors=True)
    base = report.get("baseline", {}).get("records_per_s")
    max_run = report["pipeline"]["max_rate"]
    if base:
        max_run["ratio_to_baseline"] = round(max_run["conversions_per_s"] / base, 3)
        base_cpu = report["baseline"]["cpu_ms_per_record"]
        max_run["cpu_ratio_to_baseline"] = round(base_cpu / max_run["cpu_ms_per_conversion"], 3)
    return report
