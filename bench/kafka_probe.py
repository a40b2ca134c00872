"""Kafka-side instruments of `convmesh bench`: a collector of output records with their
CreateTime, end offsets of every topic of a namespace, consumer-group lag, producers
that push at full speed or at a fixed offered rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


class Item(NamedTuple):
    """One conversion to push: record key, envelope (received_at_ms set when sent), and
    the key its result carries on conversions.attributed (or a sequence number)."""

    key: bytes | None
    envelope: dict[str, Any]
    result_key: str


class Seen(NamedTuple):
    key: str
    timestamp_ms: int
    value: bytes


async def partitions_of(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` from fresh metadata (``partitions_for_topic`` reads
    a cache that misses topics created after the consumer started)."""
    cluster = await consumer._client.fetch_all_metadata()
    return [
        TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())
    ]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Collector:
    """Reads topics from their beginning in the background and keeps every record."""

    bootstrap: str
    topics: Sequence[str]
    records: dict[str, list[Seen]] = field(default_factory=dict)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        parts = await partitions_of(consumer, self.topics)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        self._consumer = consumer
        self.records = {t: [] for t in self.topics}
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, recs in batches.items():
                out = self.records[tp.topic]
                out.extend(
                    Seen(r.key.decode() if r.key else "", r.timestamp, r.value or b"") for r in recs
                )

    def count(self, topic: str) -> int:
        return len(self.records.get(topic, ()))

    def distinct_keys(self, topic: str, wanted: set[str]) -> int:
        return len({s.key for s in self.records.get(topic, ()) if s.key in wanted})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()


async def wait_for(
    progress: Any, target: int, stall_s: float, poll_s: float = 0.25
) -> tuple[int, bool]:
    """Wait until ``progress()`` reaches ``target``; give up after ``stall_s`` seconds
    without progress. Returns (last value, reached)."""
    last, last_change = -1, time.monotonic()
    while True:
        value = int(progress())
        if value >= target:
            return value, True
        if value != last:
            last, last_change = value, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return value, False
        await asyncio.sleep(poll_s)


async def wait_consumed(probe: Offsets, groups: Mapping[str, Sequence[str]], stall_s: float) -> int:
    """Wait until the groups have committed everything they consume: zero lag on two
    polls a second apart (nothing in flight between them). Gives up when the lag has
    not gone down for ``stall_s``. Returns the lag left (0 when consumed)."""
    best, since = -1, time.monotonic()
    while True:
        lag = await probe.lag(groups)
        if lag == 0:
            await asyncio.sleep(1.0)
            lag = await probe.lag(groups)
            if lag == 0:
                return 0
        if best < 0 or lag < best:
            best, since = lag, time.monotonic()
        elif time.monotonic() - since > stall_s:
            return lag
        await asyncio.sleep(0.5)


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )


async def push(
    bootstrap: str,
    topic: str,
    items: Sequence[Item],
    rate: float | None,
    acked_ms: list[float] | None = None,
) -> tuple[int, int, dict[str, int]]:
    """Produce items (max speed, or ``rate`` per second on a fixed schedule) with
    ``received_at_ms`` set to the wall clock of the send. Returns (first ms, last ms,
    result_key -> received_at_ms). ``acked_ms`` collects, per record, the milliseconds
    from its ``received_at_ms`` to the broker's ack: the part of the first hop's
    latency that is the producer's and the broker's, not ingest's."""
    producer = make_producer(bootstrap)
    await producer.start()
    sent_at: dict[str, int] = {}
    pending: list[asyncio.Future[Any]] = []
    first = now_ms()
    started = time.monotonic()
    try:
        for i, item in enumerate(items):
            if rate:
                # Open loop: item i is due at i / rate; never waits for the mesh.
                due = started + i / rate
                delay = due - time.monotonic()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            stamp = now_ms()
            envelope = dict(item.envelope, received_at_ms=stamp)
            sent_at.setdefault(item.result_key, stamp)
            sent = await producer.send(topic, orjson.dumps(envelope), key=item.key)
            if acked_ms is not None:
                sent.add_done_callback(lambda _, t=stamp: acked_ms.append(float(now_ms() - t)))
            pending.append(sent)
            if len(pending) >= 2_000:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return first, now_ms(), sent_at


async def produce_all(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    producer = make_producer(bootstrap)
    await producer.start()
    n = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            n += 1
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n


@dataclass
class Offsets:
    """End offsets and consumer-group positions of one namespace."""

    bootstrap: str
    namespace: str
    _consumer: AIOKafkaConsumer | None = None
    _admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await self._consumer.start()
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self._admin.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def topics(self) -> list[str]:
        assert self._consumer is not None
        names = await self._consumer.topics()
        prefixes = (f"{self.namespace}.", f"{self.namespace}-")
        return sorted(t for t in names if t.startswith(prefixes))

    async def _partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        assert self._consumer is not None
        return await partitions_of(self._consumer, topics)

    async def end_offsets(self, topics: Sequence[str] | None = None) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        parts = await self._partitions(topics if topics is not None else await self.topics())
        return dict(await self._consumer.end_offsets(parts)) if parts else {}

    async def topic_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for tp, end in (await self.end_offsets()).items():
            totals[tp.topic] = totals.get(tp.topic, 0) + end
        return totals

    async def lag(self, groups: Mapping[str, Sequence[str]]) -> int:
        """Records not yet committed by each group on the topics it must consume
        (a partition the group never committed counts whole)."""
        assert self._admin is not None
        topics = sorted({t for ts in groups.values() for t in ts})
        ends = await self.end_offsets(topics)
        total = 0
        for group, wanted in groups.items():
            committed = await self._admin.list_consumer_group_offsets(group)
            for tp, end in ends.items():
                if tp.topic in wanted:
                    meta = committed.get(tp)
                    pos = meta.offset if meta is not None and meta.offset >= 0 else 0
                    total += max(0, end - pos)
        return total

    async def wait_settled(self, timeout_s: float, poll_s: float = 1.5) -> bool:
        """Wait until no topic of the namespace grows between two polls."""
        deadline = time.monotonic() + timeout_s
        before = await self.topic_totals()
        while time.monotonic() < deadline:
            await asyncio.sleep(poll_s)
            after = await self.topic_totals()
            if after == before:
                return True
            before = after
        return False

    async def create(self, names: Sequence[str], partitions: int) -> None:
        assert self._admin is not None
        await self._admin.create_topics(
            [NewTopic(n, partitions, 1) for n in names], validate_only=False
        )
        deadline = time.monotonic() + 60
        while set(names) - set(await self.topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible: {names}")
            await asyncio.sleep(0.2)

    async def delete_namespace(self) -> list[str]:
        assert self._admin is not None
        names = await self.topics()
        if names:
            await self._admin.delete_topics(names)
        return names
