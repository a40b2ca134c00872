"""Produce records and read topics to their end: for the demo summary, `convmesh
report` style commands and the end-to-end tests (not for the services' hot paths)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka import bundles
from shared.kafka.client_config import client_kwargs
from shared.runtime.settings import Settings


class Position(NamedTuple):
    topic: str
    partition: int
    offset: int


class Read(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


async def produce(
    settings: Settings, records: Iterable[tuple[str, bytes | None, bytes | None]]
) -> list[Position]:
    """Produce (real topic, key, value) records in order; their positions, in order."""
    producer = AIOKafkaProducer(
        **client_kwargs(settings), acks="all", enable_idempotence=True, linger_ms=10
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Position(m.topic, m.partition, m.offset) for m in metas]


async def read_all(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Read]:
    """Every record of a (real) topic from the beginning to its current end (a bundle's
    items each as a record)."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Read] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while remaining and loop.time() < deadline:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
            for tp, messages in batches.items():
                out.extend(read for m in messages for read in reads_of(m))
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def reads_of(message: Any) -> list[Read]:
    """The records one consumed Kafka record stands for: the items of a bundle
    (``shared.kafka.bundles``, each at the bundle's place), or itself."""
    return [
        Read(message.partition, message.offset, key, value, message.timestamp)
        for key, value in bundles.expand(message.key, message.value)
    ]


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if not t["error_code"] for p in t["partitions"])


def latest_by_key(reads: Sequence[Read]) -> dict[str, Any]:
    """The latest decoded value per key (compacted-topic view); tombstones remove.

    A record that is not JSON is skipped: it is nobody's result (the services
    dead-letter such records too).
    """
    latest: dict[str, Any] = {}
    for read in sorted(reads, key=lambda r: (r.partition, r.offset)):
        key = read.key.decode("utf-8", "replace") if read.key is not None else ""
        if read.value is None:
            latest.pop(key, None)
            continue
        try:
            latest[key] = orjson.loads(read.value)
        except orjson.JSONDecodeError:
            continue
    return latest
