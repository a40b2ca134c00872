"""Send a processing batch's records as one Kafka record batch per topic partition.

aiokafka's ``send`` costs a future, an accumulator append and its bookkeeping
per record; convmesh sends some 14 records per conversion, so that per-record
path was a third of every service's CPU (docs/benchmarks.md, profiles). Here
the records of one processing batch are grouped by topic partition (chosen by
the producer's own partitioner, so co-partitioning is exactly aiokafka's) and
each group leaves as one or a few record batches (``create_batch`` /
``send_batch``), with one future per record batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

Record = tuple[str, bytes | None, bytes | None]  # (real topic, key, value)


async def send_many(producer: Any, records: Iterable[Record]) -> list[asyncio.Future[Any]]:
    """Queue ``records`` (in order within each partition); the futures of their batches."""
    by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
    known: set[str] = set()
    for topic, key, value in records:
        if topic not in known:
            await producer.client._wait_on_metadata(topic)
            known.add(topic)
        partition = producer._partition(topic, None, None, None, key, value)
        by_partition.setdefault((topic, partition), []).append((key, value))
    futures = []
    for (topic, partition), items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(timestamp=None, key=key, value=value) is None:
                futures.append(await _send(producer, batch, topic, partition))
                batch = producer.create_batch()
                if batch.append(timestamp=None, key=key, value=value) is None:
                    raise ValueError(f"a record too large for one batch of {topic}")
        futures.append(await _send(producer, batch, topic, partition))
    return futures


async def _send(producer: Any, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    batch.close()
    future: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
    return future
