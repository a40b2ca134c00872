"""send_many: one record batch per topic partition; bundled topics as bundles."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol.metadata import MetadataResponse_v1
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import bundles
from shared.kafka.batch_producer import Placer, send_many
from shared.kafka.partitioner import Partitioner, partition_of

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


def cluster(partitions: dict[str, int], leaderless: tuple[int, ...] = ()) -> ClusterMetadata:
    """aiokafka's metadata of these topics, as a broker's metadata response fills it;
    the ``leaderless`` partitions of each have no leader (not available)."""
    metadata = ClusterMetadata()
    topics = [
        (0, topic, False, [(0, p, -1 if p in leaderless else 0, [0], [0]) for p in range(count)])
        for topic, count in partitions.items()
    ]
    brokers = [(0, "localhost", 9092, None)]
    metadata.update_metadata(MetadataResponse_v1(brokers, 0, topics))
    return metadata


class FakeProducer:
    """The parts of AIOKafkaProducer send_many uses; records what it was given."""

    def __init__(self) -> None:
        self.client = FakeClient()
        self._metadata = cluster({"lookups": PARTITIONS, "answers": PARTITIONS})
        self._partitioner = Partitioner()
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []

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


def producer_of(metadata: ClusterMetadata) -> Any:
    """The two parts of an AIOKafkaProducer that place records: metadata and partitioner."""
    return SimpleNamespace(_metadata=metadata, _partitioner=Partitioner())


def aiokafkas_choice(
    metadata: ClusterMetadata, topic: str, partition: int | None, key: bytes
) -> int:
    """``AIOKafkaProducer._partition``'s choice, run on the given metadata."""
    producer = producer_of(metadata)
    chosen: int = AIOKafkaProducer._partition(producer, topic, partition, None, None, key, None)
    return chosen


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=50))
def test_a_keyed_record_goes_where_aiokafka_would_send_it(keys: list[bytes]) -> None:
    metadata = cluster({"lookups": 8}, leaderless=(5,))
    place = Placer.of(producer_of(metadata), "lookups")
    assert [place(None, key) for key in keys] == [
        aiokafkas_choice(metadata, "lookups", None, key) for key in keys
    ]


class Recording:
    """A partitioner that records what it is asked and always answers 0."""

    def __init__(self) -> None:
        self.asked: list[tuple[bytes | None, list[int], list[int]]] = []

    def __call__(self, key: bytes | None, every: list[int], available: list[int]) -> int:
        self.asked.append((key, list(every), list(available)))
        return 0


@pytest.mark.parametrize("leaderless", [(), (5,), tuple(range(8))])
@pytest.mark.parametrize("key", [b"k", None])
def test_the_partitioner_is_asked_what_aiokafka_asks_it(
    leaderless: tuple[int, ...], key: bytes | None
) -> None:
    """Keyed or keyless (placed among the partitions with a leader), the producer's
    partitioner gets the same key and the same two lists, in the same order."""
    metadata = cluster({"lookups": 8}, leaderless=leaderless)
    ours, theirs = Recording(), Recording()
    Placer.of(SimpleNamespace(_metadata=metadata, _partitioner=ours), "lookups")(None, key)
    producer = SimpleNamespace(_metadata=metadata, _partitioner=theirs)
    AIOKafkaProducer._partition(producer, "lookups", None, None, None, key, None)
    assert ours.asked == theirs.asked
    assert ours.asked[0][2] == [p for p in range(8) if p not in leaderless]


def test_a_topic_without_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match="no metadata"):
        Placer.of(producer_of(cluster({"lookups": 8})), "answers")


def test_a_given_partition_is_kept() -> None:
    metadata = cluster({"changelog": 8})
    place = Placer.of(producer_of(metadata), "changelog")
    assert [place(p, b"k") for p in range(8)] == list(range(8))


@pytest.mark.parametrize("partition", [-1, 8])
def test_a_partition_the_topic_does_not_have_is_refused(partition: int) -> None:
    metadata = cluster({"changelog": 8})
    place = Placer.of(producer_of(metadata), "changelog")
    with pytest.raises(ValueError, match="unrecognized partition"):
        place(partition, b"k")
