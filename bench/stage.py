"""The busiest service alone: identity_match with 1, 2 and 4 workers, the rest stopped.

    .venv/bin/python -m bench.stage --workers 1,2,4 --conversions 20000

``convmesh bench --workers-of identity_match=N`` scales one service of five that share
this machine's two cores with the broker: a second worker finds no idle core, only
more per-batch and per-fetch costs (docs/benchmarks.md, "Scaling out the busiest
service"). This bench gives the measured service the machine, which is what a
deployment with a core per worker gives each worker. For each worker count:

1. a fresh namespace and mesh (development mode), ``N`` workers of identity_match;
   the identity signals, engagements and privacy requests of ``convmesh bench``'s
   workload, consumed by every group; then ``convmesh bench``'s warm-up (``--warmup``,
   a tenth of the push, at most 1,000 conversions of its second push) through the
   whole mesh, so that the stage is not the first to write to the partitions on its
   path (docs/benchmarks.md, "A warm-up for the mesh");
2. dedupe, attribute and aggregate stop (SIGTERM); the conversions are pushed at full
   speed and ingest validates them onto ``conversions.valid``; ingest stops;
3. dedupe starts again and releases them all onto ``conversions.accepted`` at once
   (it costs a sixth of identity_match's CPU per conversion), while the ``N`` workers, in
   their group since step 1, match them; only they, dedupe's first seconds and the
   broker run;
4. when identity_match's group has committed everything it consumes: conversions/s
   from the first record on ``conversions.accepted`` to identity_match's last output
   (``attribution.assignments`` and ``attribution.results``, by CreateTime; a
   conversion not decided is an error), how long dedupe took to release them, and
   the CPU seconds of identity_match's workers and of the whole machine between 0.1 s
   samples that enclose the stage.

Writes the JSON report to ``var/bench/stage-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from bench import figures
from bench.kafka_probe import Item, Offsets, produce_all, push, wait_consumed
from bench.pipeline import (
    BenchConfig,
    add_warmup_option,
    bench_workload,
    consumer_groups,
    context_records,
    drop_namespace,
    refuse_bad_warmup,
    split_off_warmup,
    start_mesh,
)
from bench.procstats import (
    cpu_seconds,
    machine_ticks,
    peak_rss_mb,
    report_header,
    start_profiles,
    stop_profiles,
    worker_pids,
    write_report,
)
from ops import mesh
from shared.kafka import bundles
from shared.kafka.topic_io import Read, read_all
from shared.runtime.settings import REPO_ROOT, SERVICES, Settings

SERVICE = "identity_match"
#: Where identity_match's decisions go: a matched conversion to its user, an
#: unidentified one straight to the results.
DECISIONS = ("attribution.assignments", "attribution.results")
ACCEPTED = "conversions.accepted"
#: Stopped before the push; dedupe comes back to release the conversions at once.
STOPPED = ("dedupe", "attribute", "aggregate")
SAMPLE_EVERY_S = 0.1
STOP_TIMEOUT_S = 30.0


def decided_conversions(reads: Iterable[Read], topic: str) -> set[str]:
    """The conversion keys among one decision topic's records (bundles unpacked)."""
    keys: set[str] = set()
    for read in reads:
        if read.value is None:
            continue
        plain = [(read.key, read.value)]
        for key, value in bundles.unpack(read.value) if bundles.is_bundle(read.value) else plain:
            if topic == "attribution.results":
                keys.add((key or b"").decode())
            elif value is not None:
                keys.add(orjson.loads(value)["conversion_key"])
    return keys


class Window(NamedTuple):
    """The stage, by CreateTime (ms): the first and last conversion dedupe released, and
    identity_match's last decision."""

    first_accepted_ms: int
    last_accepted_ms: int
    last_decision_ms: int

    @property
    def seconds(self) -> float:
        return max(1, self.last_decision_ms - self.first_accepted_ms) / 1000

    @property
    def release_seconds(self) -> float:
        """How long dedupe took to release them: far shorter than ``seconds``, or the
        stage measured dedupe rather than identity_match."""
        return max(1, self.last_accepted_ms - self.first_accepted_ms) / 1000


def stage_window(accepted: Sequence[Read], decisions: Sequence[Read], since_ms: int) -> Window:
    """From the first record on conversions.accepted written at or after ``since_ms``
    to the last decision written after it."""
    released = [r.timestamp_ms for r in accepted if r.timestamp_ms >= since_ms]
    last = max((r.timestamp_ms for r in decisions if r.timestamp_ms >= since_ms), default=None)
    if not released or last is None:
        raise ValueError("no accepted conversion or no decision after the stage began")
    return Window(min(released), max(released), last)


class Sample(NamedTuple):
    """CPU seconds of the measured workers and the machine's ticks at a wall-clock ms."""

    at_ms: int
    cpu_s: float
    machine: tuple[int, int]


def window_of(samples: Sequence[Sample], start_ms: int, end_ms: int) -> tuple[Sample, Sample]:
    """The samples that enclose [start_ms, end_ms]: the last at or before the start and
    the first at or after the end. Samples that do not enclose it are an error: the
    CPU between them would not be the stage's."""
    before = [s for s in samples if s.at_ms <= start_ms]
    after = [s for s in samples if s.at_ms >= end_ms]
    if not before or not after:
        raise ValueError("the CPU samples do not enclose the stage")
    return before[-1], after[0]


async def sample_cpu(pids: Sequence[tuple[str, int]], into: list[Sample], every_s: float) -> None:
    """Sample until cancelled: the stage's CPU is read between two samples, not from
    the start of dedupe (its start-up) to the end of the wait for the group."""
    while True:
        cpu = sum(cpu_seconds(pids).values())
        into.append(Sample(int(time.time() * 1000), cpu, machine_ticks()))
        await asyncio.sleep(every_s)


def groups_of(settings: Settings, services: Sequence[str]) -> dict[str, list[str]]:
    wanted = {Settings(service=s, namespace=settings.namespace).app_id for s in services}
    return {g: topics for g, topics in consumer_groups(settings).items() if g in wanted}


async def load_context(settings: Settings, context: list[Any], stall_s: float) -> None:
    """The context records, consumed by every service's group."""
    await produce_all(settings.bootstrap, context)
    await drained(settings, SERVICES, stall_s)


async def warm_up(settings: Settings, items: Sequence[Item], stall_s: float) -> None:
    """``items`` through the whole mesh, not measured: every group has consumed them."""
    if items:
        await push(settings.bootstrap, settings.topic_name("conversions.raw"), items, None)
        await drained(settings, SERVICES, stall_s)


async def validate(settings: Settings, items: Sequence[Item], stall_s: float) -> None:
    """The push at full speed, then wait until ingest has validated every conversion."""
    await push(settings.bootstrap, settings.topic_name("conversions.raw"), items, None)
    await drained(settings, ["ingest"], stall_s)


async def drained(settings: Settings, services: Sequence[str], stall_s: float) -> None:
    """Wait until the groups of ``services`` have consumed everything; an error if not."""
    probe = Offsets(settings.bootstrap, settings.namespace)
    await probe.start()
    try:
        lag = await wait_consumed(probe, groups_of(settings, services), stall_s)
        if lag:
            raise RuntimeError(f"{', '.join(services)} left {lag} records unconsumed")
    finally:
        await probe.stop()


async def run_stage(
    settings: Settings, pids: Sequence[tuple[str, int]], args: argparse.Namespace
) -> tuple[list[Sample], int]:
    """dedupe back, identity_match's group drained; the CPU samples and the start (ms).
    With ``--profile``, py-spy samples identity_match's worker 0 meanwhile."""
    samples: list[Sample] = []
    sampler = asyncio.create_task(sample_cpu(pids, samples, SAMPLE_EVERY_S))
    services = [SERVICE] if args.profile else []
    profiler = start_profiles(settings, pids, "stage", services, args.out_dir)
    try:
        since_ms = int(time.time() * 1000)
        mesh._start_worker(settings, "dedupe", 0)
        await drained(settings, ["dedupe", SERVICE], args.stall_s)
    finally:
        sampler.cancel()
        stop_profiles(profiler)
    return samples, since_ms


async def stage_reads(settings: Settings) -> tuple[list[Read], list[Read], set[str]]:
    """conversions.accepted, identity_match's decisions and the conversions decided."""
    accepted = await read_all(settings, settings.topic_name(ACCEPTED), 120.0)
    decisions: list[Read] = []
    decided: set[str] = set()
    for topic in DECISIONS:
        reads = await read_all(settings, settings.topic_name(topic), 120.0)
        decisions += reads
        decided |= decided_conversions(reads, topic)
    return accepted, decisions, decided


def figures_of(
    items: Sequence[Item],
    samples: Sequence[Sample],
    reads: tuple[list[Read], list[Read], set[str]],
    since_ms: int,
) -> dict[str, Any]:
    """The stage's figures; an error when a conversion was not decided."""
    accepted, decisions, decided = reads
    missing = {i.result_key for i in items} - decided
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(items)} conversions were not decided")
    window = stage_window(accepted, decisions, since_ms)
    first, last = window_of(samples, window.first_accepted_ms, window.last_decision_ms)
    cpu_s = round(last.cpu_s - first.cpu_s, 2)
    return {
        "decided": len(items),
        **window._asdict(),
        "seconds": window.seconds,
        "release_seconds": window.release_seconds,
        "conversions_per_s": round(len(items) / window.seconds, 1),
        "cpu_s": cpu_s,
        "cpu_ms_per_conversion": figures.per_item_ms(cpu_s, len(items)),
        "cpu_window_s": round((last.at_ms - first.at_ms) / 1000, 2),
        "machine_busy_cores": figures.busy_cores(first.machine, last.machine, os.cpu_count() or 1),
    }


def measure(workers: int, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    namespace = f"stage-{uuid.uuid4().hex[:8]}"
    data_dir = args.out_dir / namespace
    os.environ.update(
        CONVMESH_NAMESPACE=namespace, CONVMESH_DEV_MODE="true", CONVMESH_DATA_DIR=str(data_dir)
    )
    settings = Settings.from_env()
    workload, pushes = bench_workload(args.conversions, args.seed)
    items = pushes[0]
    config = BenchConfig(
        conversions=args.conversions,
        workers_of={SERVICE: workers},
        warmup=args.warmup,
        out_dir=args.out_dir,
    )
    warm, _ = split_off_warmup(pushes[1], config.warmup_size())
    out: dict[str, Any] = {
        "workers": workers,
        "namespace": namespace,
        "conversions": len(items),
        "warmup": len(warm),
    }
    try:
        start_mesh(settings, config)
        asyncio.run(load_context(settings, context_records(workload, settings), args.stall_s))
        asyncio.run(warm_up(settings, warm, args.stall_s))
        for service in STOPPED:
            mesh.stop_workers(settings, service, [0], STOP_TIMEOUT_S)
        asyncio.run(validate(settings, items, args.stall_s))
        mesh.stop_workers(settings, "ingest", [0], STOP_TIMEOUT_S)
        say(f"{workers} worker(s): {len(items)} conversions validated; identity_match alone")
        pids = worker_pids(settings, {SERVICE: workers})
        samples, since_ms = asyncio.run(run_stage(settings, pids, args))
        reads = asyncio.run(stage_reads(settings))
        out.update(figures_of(items, samples, reads, since_ms))
        out["peak_rss_mb"] = peak_rss_mb(pids).get(SERVICE)
        if args.profile:  # its figures are not comparable: py-spy slows the worker
            out["profile"] = str(args.out_dir / f"{namespace}-stage-{SERVICE}.txt")
        say(
            f"{workers} worker(s): {out['conversions_per_s']} conversions/s, "
            f"{out['cpu_ms_per_conversion']} CPU ms each, "
            f"machine {out['machine_busy_cores']} cores busy, "
            f"released in {out['release_seconds']} s of {out['seconds']}"
        )
    finally:
        mesh.down(settings)
        drop_namespace(settings, say)
    # Kept when the run failed: the workers' logs are in it.
    shutil.rmtree(data_dir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts of identity_match")
    parser.add_argument("--conversions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    add_warmup_option(parser, "before the stage")
    parser.add_argument("--stall-s", type=float, default=120.0)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "var" / "bench")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on identity_match's worker 0 during the stage (files in --out-dir)",
    )
    args = parser.parse_args(argv)
    refuse_bad_warmup(parser, args.conversions, args.warmup)
    report = report_header(args)
    report["service"] = SERVICE
    report["runs"] = []
    out = args.json_out or args.out_dir / f"stage-{time.strftime('%Y%m%dT%H%M%S')}.json"
    for workers in args.workers.split(","):
        report["runs"].append(measure(int(workers), args, print))
        write_report(report, out)  # after each: a later failure keeps the runs before it
    return 0


if __name__ == "__main__":
    sys.exit(main())
