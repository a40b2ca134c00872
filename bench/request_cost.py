"""What one Kafka request costs a Python client on this machine, in CPU.

    python -m bench.request_cost [--bootstrap 127.0.0.1:9092]

Plain aiokafka, no Faust, against a running broker, in fresh throwaway topics of 8
partitions (deleted afterwards):

* a produce round trip of one small record (``acks=all``), awaited before the next;
* a produce of 10 records over 8 partitions, awaited as one;
* an idle consumer over 8 and over 80 partitions, with a 20 ms fetch wait: its CPU
  share, and that share per fetch; without and with fetch sessions
  (``shared.kafka.fetch_sessions``).

Every convmesh batch pays at least one fetch and two produce round trips (outputs,
then state), so these figures bound a batch's cost from below (docs/benchmarks.md,
"What a batch costs").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.kafka_probe import Offsets
from shared.kafka.fetch_sessions import use_fetch_sessions

PARTITIONS = 8
ROUNDS = 500
IDLE_S = 5.0
FETCH_WAIT_MS = 20
PAYLOAD = b"x" * 200


async def produce_costs(bootstrap: str, topic: str, rounds: int) -> tuple[float, float]:
    """CPU ms per awaited one-record produce, and per awaited 10-record produce."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for _ in range(50):  # metadata, leaders, connections
            await producer.send_and_wait(topic, PAYLOAD, partition=0)
        started = time.process_time()
        for _ in range(rounds):
            await producer.send_and_wait(topic, PAYLOAD, partition=0)
        single = (time.process_time() - started) * 1000 / rounds
        started = time.process_time()
        for _ in range(rounds):
            sent = [
                await producer.send(topic, PAYLOAD, partition=i % PARTITIONS) for i in range(10)
            ]
            await asyncio.gather(*sent)
        ten = (time.process_time() - started) * 1000 / rounds
    finally:
        await producer.stop()
    return single, ten


async def idle_fetch_cost(
    bootstrap: str, topics: list[str], idle_s: float, *, sessions: bool = False
) -> tuple[float, float]:
    """(CPU share in %, CPU ms per fetch) of a consumer whose partitions stay empty."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        fetch_max_wait_ms=FETCH_WAIT_MS,
        fetch_min_bytes=1,
    )
    await consumer.start()
    if sessions:
        use_fetch_sessions(consumer._fetcher)
    try:
        await consumer.getmany(timeout_ms=500)  # assignment, positions
        cpu, wall = time.process_time(), time.perf_counter()
        await consumer.getmany(timeout_ms=int(idle_s * 1000))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await consumer.stop()
    return 100 * cpu / wall, cpu * 1000 / (wall * 1000 / FETCH_WAIT_MS)


async def measure(bootstrap: str, rounds: int = ROUNDS, idle_s: float = IDLE_S) -> dict[str, float]:
    """The figures, by name: CPU ms per request, and the idle consumers' CPU share (%)."""
    # A namespace of its own: Offsets creates its topics (waiting until they are
    # visible, so no send meets a partition without a leader) and deletes them.
    topics = Offsets(bootstrap, f"request-cost-{os.getpid()}")
    names = [f"{topics.namespace}.t{i}" for i in range(11)]
    await topics.start()
    figures: dict[str, float] = {}
    try:
        await topics.create(names, PARTITIONS)
        single, ten = await produce_costs(bootstrap, names[0], rounds)
        figures["produce_1_record_ms"] = single
        figures["produce_10_records_ms"] = ten
        for count in (1, 10):
            for sessions, kind in ((False, ""), (True, "_session")):
                share, per_fetch = await idle_fetch_cost(
                    bootstrap, names[1 : 1 + count], idle_s, sessions=sessions
                )
                figures[f"idle_{PARTITIONS * count}_partitions{kind}_cpu_pct"] = share
                figures[f"fetch_{PARTITIONS * count}_partitions{kind}_ms"] = per_fetch
    finally:
        await topics.delete_namespace()
        await topics.stop()
    return figures


def report(figures: dict[str, float]) -> str:
    return "\n".join(
        [
            f"produce, 1 record, awaited: {figures['produce_1_record_ms']:.3f} CPU ms",
            f"produce, 10 records over 8 partitions: {figures['produce_10_records_ms']:.3f} CPU ms",
            *(
                f"idle consumer, {n:>2} partitions, {FETCH_WAIT_MS} ms wait{label}:"
                f" {figures[f'idle_{n}_partitions{kind}_cpu_pct']:.1f}% CPU,"
                f" {figures[f'fetch_{n}_partitions{kind}_ms']:.3f} CPU ms per fetch"
                for n in (PARTITIONS, 10 * PARTITIONS)
                for kind, label in (("", ""), ("_session", ", in a fetch session"))
            ),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    print(report(asyncio.run(measure(parser.parse_args().bootstrap))))
