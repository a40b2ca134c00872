"""Send a processing batch's records as one Kafka record batch per topic partition.

aiokafka's ``send`` costs a future, an accumulator append and its bookkeeping
per record; convmesh sends some 14 records and 10 changelog records per
conversion, so the per-record path was a third of every service's CPU
(docs/benchmarks.md, profiles). Here the records of one processing batch are
grouped by topic partition (the given one, or the producer's own partitioner's
choice, so co-partitioning is exactly aiokafka's) and each group leaves as one
or a few record batches (``create_batch`` / ``send_batch``), with one future
per record batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from shared.kafka import bundles

#: (real topic, partition or None for the partitioner's choice, key, value)
Record = tuple[str, int | None, bytes | None, bytes | None]


@dataclass(frozen=True, slots=True)
class SentBatch:
    """One record batch handed to the producer: ``future`` gives its base offset."""

    topic: str
    partition: int
    count: int
    future: asyncio.Future[Any]

    async def last_offset(self) -> int:
        """The offset of the batch's last record, once the broker has it."""
        metadata = await self.future
        return int(metadata.offset) + self.count - 1


@dataclass(frozen=True, slots=True)
class Placer:
    """aiokafka's ``_partition`` for one topic, its partitions read once per call.

    aiokafka builds the topic's set of partitions for every record it places
    (twice for a keyed record, once to check a given partition): 3-6% of each
    stateful service's CPU in the bench profile, for lists that do not change
    within a processing batch. The choice itself is the producer's partitioner's,
    given the same lists. A partition the topic does not have raises ValueError
    (aiokafka asserts).
    """

    partitions: frozenset[int]
    every: list[int]
    available: list[int]
    partitioner: Any

    @classmethod
    def of(cls, producer: Any, topic: str) -> Placer:
        metadata = producer._metadata
        every = metadata.partitions_for_topic(topic)
        available = metadata.available_partitions_for_topic(topic)
        if every is None or available is None:  # send_many waited for the metadata
            raise ValueError(f"no metadata for topic {topic}")
        return cls(frozenset(every), list(every), list(available), producer._partitioner)

    def __call__(self, partition: int | None, key: bytes | None) -> int:
        if partition is not None:
            if partition < 0 or partition not in self.partitions:
                raise ValueError(f"unrecognized partition {partition}")
            return partition
        chosen: int = self.partitioner(key, self.every, self.available)
        return chosen


async def send_many(
    producer: Any, records: Iterable[Record], bundled: AbstractSet[str] = frozenset()
) -> list[SentBatch]:
    """Queue ``records`` (in order within each partition); their record batches.

    The records of a topic in ``bundled`` (real names) leave as bundles: each
    partition's records of the call in as few records as ``bundles.pack`` makes.
    """
    by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
    placers: dict[str, Placer] = {}
    for topic, partition, key, value in records:
        place = placers.get(topic)
        if place is None:
            await producer.client._wait_on_metadata(topic)
            place = placers[topic] = Placer.of(producer, topic)
        by_partition.setdefault((topic, place(partition, key)), []).append((key, value))
    sent = []
    for (topic, partition), grouped in by_partition.items():
        items = bundles.pack(grouped) if topic in bundled else grouped
        batch, count = producer.create_batch(), 0
        for key, value in items:
            if batch.append(timestamp=None, key=key, value=value) is None:
                sent.append(await _send(producer, batch, topic, partition, count))
                batch, count = producer.create_batch(), 0
                if batch.append(timestamp=None, key=key, value=value) is None:
                    raise ValueError(f"a record too large for one batch of {topic}")
            count += 1
        sent.append(await _send(producer, batch, topic, partition, count))
    return sent


async def _send(producer: Any, batch: Any, topic: str, partition: int, count: int) -> SentBatch:
    batch.close()
    future = await producer.send_batch(batch, topic, partition=partition)
    return SentBatch(topic, partition, count, future)
