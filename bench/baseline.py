"""The bare-Kafka limit in the same run: the push's envelopes through a chain of
plain aiokafka relays (bench/relays.py), one process per stage."""

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
    settings: Settings, items: Sequence[Item], stall_s: float, say: Callable[[str], None]
) -> dict[str, Any]:
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
        pids = [("relay", p.pid) for p in procs]
        brokers = broker_pids(settings.bootstrap)
        cpu0, load = cpu_seconds([*pids, *brokers]), load_1m()
        say(f"baseline: {len(items)} records through {CRITICAL_PATH_STAGES} relays (load {load})")
        first, _, _ = await push(settings.bootstrap, topics[0], items, None)
        got, done = await wait_for(lambda: collector.count(topics[-1]), len(items), stall_s)
        cpu1 = cpu_seconds([*pids, *brokers])
        relays_cpu = sum(cpu_delta(pids, cpu0, cpu1).values())
        broker_cpu = cpu_delta(brokers, cpu0, cpu1).get("broker")
        seen = collector.records[topics[-1]]
        last = max(s.timestamp_ms for s in seen)
        latencies = [s.timestamp_ms - orjson.loads(s.value)["received_at_ms"] for s in seen]
        return {
            "stages": CRITICAL_PATH_STAGES,
            "partitions": partitions,
            "records": len(items),
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
