"""shared.kafka.partitioner: Kafka's default placement, fast and cached."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka.partitioner import Partitioner, murmur2, partition_of


@given(st.binary(max_size=300))
def test_murmur2_equals_aiokafkas_for_any_bytes(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


def test_murmur2_of_known_keys_matches_the_java_clients() -> None:
    """Values of org.apache.kafka.common.utils.Utils.murmur2 (its unit test)."""
    assert murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == (-985981536) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") == (-1486304829) & 0xFFFFFFFF
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == (-58897971) & 0xFFFFFFFF
    assert murmur2(b"abc") == 479470107


@given(st.binary(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_partition_of_a_key_is_kafkas(key: bytes, partitions: int) -> None:
    expected = DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))
    assert partition_of(key, partitions) == expected


@given(st.binary(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_the_producer_partitioner_places_keys_as_aiokafkas_default(
    key: bytes, partitions: int
) -> None:
    every = list(range(partitions))
    partitioner = Partitioner()
    first = partitioner(key, every, every)
    assert first == DefaultPartitioner()(key, every, every)
    assert partitioner(key, every, every) == first  # the cached answer is the same


def test_a_cached_key_follows_a_change_of_partition_count() -> None:
    partitioner = Partitioner()
    key = b"conversion:key"
    assert partitioner(key, list(range(4)), []) == partition_of(key, 4)
    assert partitioner(key, list(range(12)), []) == partition_of(key, 12)


def test_a_keyless_record_goes_to_an_available_partition() -> None:
    partitioner = Partitioner()
    assert {partitioner(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}


def test_partitioners_keep_their_own_caches() -> None:
    """The cache is the partitioner's (one per producer), not the process's."""
    first, second = Partitioner(cache_keys=4), Partitioner(cache_keys=4)
    first(b"k", [0, 1, 2], [])
    assert first._partition_of.cache_info().currsize == 1
    assert second._partition_of.cache_info().currsize == 0
