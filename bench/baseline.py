"""The bare-Kafka limit in the same run: the push's envelopes through a chain of
plain aiokafka relays (bench/relays.py), one process per stage.

The chain first carries a warm-up push that is not measured. On a broker that had
just started, the relays carried 2,000-2,200 records/s with the broker at 0.43-0.49
CPU ms per envelope, against 3,000-3,400 and 0.13-0.15 on its next run
(docs/benchmarks.md, "The broker's share"), as a JVM that has not yet compiled its
request paths would. The mesh, measured after the relays and its own preload, did not
pay that, so a fresh broker flattered the ratio. The warm-up narrows the gap (halfway
in the one run measured); the figures to compare are those of a broker that has run
before.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bench import figures
from bench.kafka_probe import Collector, Item, Offsets, push, wait_for
from bench.procstats import broker_pids, cpu_delta, cpu_seconds, load_1m
from bench.relays import CRITICAL_PATH_STAGES, stage_topics
from ops.workload import RAW
from shared.kafka.registry_access import registry_for
from shared.runtime.settings import REPO_ROOT, Settings


async def run_baseline(
    settings: Settings,
    items: Sequence[Item],
    stall_s: float,
    say: Callable[[str], None],
    warmup: Sequence[Item] = (),
) -> dict[str, Any]:
    """``items`` through the relay chain, measured, after ``warmup`` through it, not."""
    partitions = registry_for(settings).topic(RAW).partitions
    topics = stage_topics(settings.namespace)
    probe = Offsets(settings.bootstrap, settings.namespace)
    await probe.start()
    procs: list[subprocess.Popen[bytes]] = []
    collector = None
    try:
        await probe.create(topics, partitions)
        for i in range(CRITICAL_PATH_STAGES):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.relays",
                        "--bootstrap",
                        settings.bootstrap,
                        "--source",
                        topics[i],
                        "--dest",
                        topics[i + 1],
                        "--group",
                        f"{settings.namespace}-relay-{i}",
                    ],
                    cwd=REPO_ROOT,
                    stdout=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                )
            )
        for proc in procs:  # each prints "ready" once its partitions are assigned
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            if line.strip() != b"ready":
                raise RuntimeError(f"relay {proc.pid} did not start")
        collector = Collector(settings.bootstrap, [topics[-1]])
        await collector.start()
        if warmup:
            say(f"baseline: warming up with {len(warmup)} records")
            await push(settings.bootstrap, topics[0], warmup, None)
            _, warm = await wait_for(lambda: collector.count(topics[-1]), len(warmup), stall_s)
            if not warm:  # its late records would be counted as the measured push's
                raise RuntimeError("the relays' warm-up push did not come through")
        # The measured records are those that arrive after every warm-up record has.
        before = collector.count(topics[-1])
        pids = [("relay", p.pid) for p in procs]
        brokers = broker_pids(settings.bootstrap)
        cpu0, load = cpu_seconds([*pids, *brokers]), load_1m()
        say(f"baseline: {len(items)} records through {CRITICAL_PATH_STAGES} relays (load {load})")
        first, _, _ = await push(settings.bootstrap, topics[0], items, None)
        got, done = await wait_for(
            lambda: collector.count(topics[-1]) - before, len(items), stall_s
        )
        cpu1 = cpu_seconds([*pids, *brokers])
        relays_cpu = sum(cpu_delta(pids, cpu0, cpu1).values())
        broker_cpu = cpu_delta(brokers, cpu0, cpu1).get("broker")
        seen = collector.records[topics[-1]][before:]
        last = max(s.timestamp_ms for s in seen)
        received = [orjson.loads(s.value)["received_at_ms"] for s in seen]
        if min(received, default=first) < first:
            raise RuntimeError("a record sent before the measured push was counted in it")
        latencies = [s.timestamp_ms - r for s, r in zip(seen, received, strict=True)]
        return {
            "stages": CRITICAL_PATH_STAGES,
            "partitions": partitions,
            "records": len(items),
            "warmup_records": len(warmup),
            "delivered": got,
            "complete": done,
            "records_per_s": round(figures.rate_per_s(got, first, last), 1),
            "latency_ms": figures.latency_summary(latencies),
            "cpu_s_all_relays": round(relays_cpu, 2),
            "cpu_ms_per_record": figures.per_item_ms(relays_cpu, got),
            "broker_cpu_s": broker_cpu,
            "broker_cpu_ms_per_record": figures.per_item_ms(broker_cpu, got),
            "load_1m": load,
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if collector is not None:
            await collector.stop()
        await probe.stop()
