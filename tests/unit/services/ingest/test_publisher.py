"""services.ingest.publisher.KafkaPublisher: record batches, partitions, error mapping."""

from __future__ import annotations

import asyncio

import pytest

from services.ingest.publisher import KafkaPublisher, PublishUnavailable
from shared.runtime.settings import Settings

AD = "549755885175"


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.records: list[bytes] = []
        self.capacity = capacity

    def append(self, *, key: bytes, value: bytes, timestamp: int) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append(value)
        return object()

    def close(self) -> None:
        pass


class _Producer:
    """Stands in for AIOKafkaProducer: batches of ``capacity`` records, optional failure."""

    def __init__(self, capacity: int = 1000, error: Exception | None = None) -> None:
        self.capacity = capacity
        self.error = error
        self.sent: list[tuple[str, int, list[bytes]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(8))

    def create_batch(self) -> _Batch:
        return _Batch(self.capacity)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int):
        future = asyncio.get_running_loop().create_future()
        if self.error is not None:
            future.set_exception(self.error)
        else:
            self.sent.append((topic, partition, batch.records))
            future.set_result(None)
        return future


def _publisher(producer: _Producer) -> KafkaPublisher:
    publisher = KafkaPublisher(Settings())
    publisher.producer = producer
    publisher.started = True
    return publisher


async def test_publisher_sends_one_batch_per_request_to_the_key_partition():
    from aiokafka.partitioner import murmur2

    producer = _Producer()
    await _publisher(producer).publish("t", AD.encode(), [b"a", b"b", b"c"], 1)
    expected = (murmur2(AD.encode()) & 0x7FFFFFFF) % 8
    assert producer.sent == [("t", expected, [b"a", b"b", b"c"])]


async def test_publisher_splits_what_does_not_fit_one_batch_in_order():
    producer = _Producer(capacity=2)
    await _publisher(producer).publish("t", b"k", [b"1", b"2", b"3", b"4", b"5"], 1)
    assert [records for _, _, records in producer.sent] == [[b"1", b"2"], [b"3", b"4"], [b"5"]]


async def test_publisher_turns_broker_errors_into_publish_unavailable():
    from aiokafka.errors import KafkaTimeoutError

    producer = _Producer(error=KafkaTimeoutError())
    with pytest.raises(PublishUnavailable):
        await _publisher(producer).publish("t", b"k", [b"1"], 1)


async def test_publisher_not_started_is_unavailable():
    with pytest.raises(PublishUnavailable):
        await KafkaPublisher(Settings()).publish("t", b"k", [b"1"], 1)
