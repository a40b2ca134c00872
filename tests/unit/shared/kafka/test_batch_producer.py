"""send_many: one record batch per topic partition; bundled topics as bundles."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.kafka import bundles
from shared.kafka.batch_producer import send_many
from shared.kafka.partitioner import partition_of

PARTITIONS = 4


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes | None) -> object:
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        pass


class FakeClient:
    async def _wait_on_metadata(self, topic: str) -> None:
        return None


class FakeProducer:
    """The parts of AIOKafkaProducer send_many uses; records what it was given."""

    def __init__(self) -> None:
        self.client = FakeClient()
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []

    def _partition(self, topic: str, partition: Any, _k: Any, _v: Any, key: bytes, _r: Any) -> int:
        return partition if partition is not None else partition_of(key, PARTITIONS)

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.records))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def records(n: int) -> list[tuple[str, None, bytes, bytes]]:
    return [("lookups", None, f"id-{i}".encode(), f'{{"n":{i}}}'.encode()) for i in range(n)]


async def test_a_plain_topic_sends_each_record() -> None:
    producer = FakeProducer()
    await send_many(producer, records(40))
    assert sum(len(sent) for _, _, sent in producer.sent) == 40


async def test_a_bundled_topic_sends_one_record_per_partition_in_order() -> None:
    producer = FakeProducer()
    await send_many(producer, records(40), bundled={"lookups"})
    assert sorted(partition for _, partition, _ in producer.sent) == list(range(PARTITIONS))
    for _, partition, sent in producer.sent:
        ((key, value),) = sent
        items = bundles.unpack(value or b"")
        assert key == items[0][0]
        assert all(partition_of(k or b"", PARTITIONS) == partition for k, _ in items)
        numbers = [int(v[5:-1]) for _, v in items if v]
        assert numbers == sorted(numbers)  # the partition's records in their order
    assert sum(len(bundles.unpack(s[0][1] or b"")) for _, _, s in producer.sent) == 40


async def test_only_the_bundled_topics_are_bundled() -> None:
    producer = FakeProducer()
    other = [("answers", None, b"c1", b"{}"), ("answers", None, b"c1", b"{}")]
    await send_many(producer, records(3) + other, bundled={"lookups"})
    answers = [sent for topic, _, sent in producer.sent if topic == "answers"]
    assert answers == [[(b"c1", b"{}"), (b"c1", b"{}")]]
