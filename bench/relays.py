"""The bare-Kafka limit: a chain of plain aiokafka relays, one process per stage.

Each relay consumes one topic, decodes and re-encodes every value with orjson (the
least any stage of the mesh does) and produces it, same key, to the next topic, with
the producer settings a careful hand-written service would use (idempotent,
``acks=all``, a short linger, one await per fetched batch). ``convmesh bench`` runs
as many relays as the mesh has stages on a conversion's critical path, over topics
with the pipeline's partition count, so the two figures compare like with like.

    python -m bench.relays --bootstrap 127.0.0.1:9092 --source T0 --dest T1 --group G

prints ``ready`` once its consumer has its partitions, then relays until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

#: ingest, dedupe, identity_match (owner), keys, owner, users, attribute (publisher),
#: aggregate rows: the stages a conversion crosses from conversions.raw to
#: conversions.attributed and reports.conversions (docs/design.md). Nine until the
#: publisher sent the report deltas itself (aggregate's results stage is gone).
CRITICAL_PATH_STAGES = 8


def stage_topics(namespace: str, stages: int = CRITICAL_PATH_STAGES) -> list[str]:
    """relay.0 (input) .. relay.<stages> (output): stages + 1 topics."""
    return [f"{namespace}.bench.relay.{i}" for i in range(stages + 1)]


async def relay(bootstrap: str, source: str, dest: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        announced = False
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=5_000)
            if not announced and consumer.assignment():
                print("ready", flush=True)  # auto_offset_reset=earliest: nothing is missed
                announced = True
            pending: list[asyncio.Future[Any]] = []
            for records in batches.values():
                for rec in records:
                    value = orjson.dumps(orjson.loads(rec.value))
                    pending.append(await producer.send(dest, value, key=rec.key))
            if pending:
                await asyncio.gather(*pending)
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    asyncio.run(relay(args.bootstrap, args.source, args.dest, args.group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
