"""How the API stores a request's events: ``KafkaPublisher`` (and the ``Publisher`` seam).

The handler only needs ``publish(topic, key, values, ts_ms)``, which either returns
once the broker acknowledged every value or raises ``PublishUnavailable``; tests
give it a fake publisher. See docs/api.md, "Durability: when is a 200 sent".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from shared.kafka.client_config import client_kwargs
from shared.kafka.partitioner import partition_of
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

log = get_logger(component="api")


class PublishUnavailable(Exception):
    """The broker did not acknowledge a request's records in time."""


class Publisher(Protocol):
    async def publish(self, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int) -> None:
        """Write ``values`` (in order) under ``key``; raise PublishUnavailable on failure."""


class KafkaPublisher:
    """Publishes a request's envelopes with an idempotent ``acks=all`` producer of its own.

    All the records of one request share a key (the ad account), hence a partition; they
    are packed into explicit record batches (``create_batch``) of up to ``max_batch_bytes``.
    The broker appends a record batch atomically, so a request that fits in one batch
    (100 typical events are ~70 KB; the default batch limit is ~1 MB) is stored entirely or
    not at all. A larger request is split into several batches: a failure between them can
    leave a prefix stored while the answer is 503; a retry of the whole request is then
    absorbed by downstream deduplication (first accepted event wins).

    A request is published by the least busy producer of a small pool (``producers``):
    aiokafka sends one produce request at a time per broker connection, so with a single
    producer all requests of a worker would wait for each other's broker round trips.
    """

    def __init__(
        self, settings: Settings, *, max_batch_bytes: int = 1_000_000, producers: int = 4
    ) -> None:
        self.settings = settings
        self.timeout_s = settings.api_publish_timeout_s
        self.max_batch_bytes = max_batch_bytes
        self.pool_size = max(1, producers)
        #: aiokafka keeps one produce request in flight per broker connection and one
        #: queued batch per partition, so one producer publishes one request's batch per
        #: broker round trip for a partition; a small pool keeps several in flight.
        self.pool: list[Any] = []
        self._busy: list[int] = []
        self._partitions: dict[str, list[int]] = {}
        self.started = False

    @property
    def producer(self) -> Any:
        return self.pool[0] if self.pool else None

    @producer.setter
    def producer(self, value: Any) -> None:
        self.pool = [value]
        self._busy = [0]

    async def start(self) -> None:
        """Create (inside the running loop, as aiokafka requires) and start the producers."""
        from aiokafka import AIOKafkaProducer

        max_batch_bytes = self.max_batch_bytes
        for _ in range(self.pool_size):
            producer = AIOKafkaProducer(
                **client_kwargs(self.settings),
                acks="all",
                enable_idempotence=True,
                max_batch_size=max_batch_bytes,
                max_request_size=max(1_048_576, max_batch_bytes + 65_536),
                request_timeout_ms=int(self.timeout_s * 1000),
                linger_ms=0,
            )
            await producer.start()
            self.pool.append(producer)
            self._busy.append(0)
        self.started = True

    async def stop(self) -> None:
        if self.started:
            self.started = False
            for producer in self.pool:
                await producer.stop()

    async def _partition_of(self, topic: str, key: bytes) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = sorted(await self.producer.partitions_for(topic))
            self._partitions[topic] = partitions
        # the same choice as the Java and aiokafka default partitioners
        return partitions[partition_of(key, len(partitions))]

    async def _send(self, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int) -> None:
        index = min(range(len(self.pool)), key=self._busy.__getitem__)
        self._busy[index] += 1
        try:
            await self._send_with(self.pool[index], topic, key, values, ts_ms)
        finally:
            self._busy[index] -= 1

    async def _send_with(
        self, producer: Any, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int
    ) -> None:
        partition = await self._partition_of(topic, key)
        batches = []
        batch = producer.create_batch()
        for value in values:
            if batch.append(key=key, value=value, timestamp=ts_ms) is None:
                batches.append(batch)
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=ts_ms) is None:
                    raise PublishUnavailable("a record does not fit in an empty batch")
        batches.append(batch)
        futures = []
        for b in batches:
            b.close()
            futures.append(await producer.send_batch(b, topic, partition=partition))
        await asyncio.gather(*futures)

    async def publish(self, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int) -> None:
        if not self.started:
            raise PublishUnavailable("the producer is not running")
        try:
            await asyncio.wait_for(self._send(topic, key, values, ts_ms), self.timeout_s)
        except PublishUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - KafkaError, timeouts, closed producer...
            log.warning("api_publish_failed", error=type(exc).__name__, records=len(values))
            raise PublishUnavailable(type(exc).__name__) from exc
