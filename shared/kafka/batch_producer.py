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


async def send_many(
    producer: Any, records: Iterable[Record], bundled: AbstractSet[str] = frozenset()
) -> list[SentBatch]:
    """Queue ``records`` (in order within each partition); their record batches.

    The records of a topic in ``bundled`` (real names) leave as bundles: each
    partition's records of the call in as few records as ``bundles.pack`` makes.
    """
    by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
    known: set[str] = set()
    for topic, partition, key, value in records:
        if topic not in known:
            await producer.client._wait_on_metadata(topic)
            known.add(topic)
        chosen = producer._partition(topic, partition, None, None, key, value)
        by_partition.setdefault((topic, chosen), []).append((key, value))
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
