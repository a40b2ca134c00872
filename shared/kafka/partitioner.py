"""Kafka's default key partitioning (murmur2), computed fast and once per key.

Every keyed record a worker sends is placed by murmur2 of its key, exactly as
the Java client and aiokafka's ``DefaultPartitioner`` place it: co-partitioned
topics and tables depend on all producers agreeing. aiokafka's murmur2 is pure
Python and spends about twenty operations per 4-byte word (5% of
identity_match's CPU in an early profile); a leaner pure-Python version still
took 2.3-2.8 µs per new key, 3.8% of the mesh's busy samples (docs/benchmarks.md,
"Three cuts from a finer profile"). ``murmurhash2`` (a small native extension,
wheels for Linux, macOS and Windows) computes the same function in about
0.14 µs; property tests hold it to aiokafka's and the Java client's values.
``Partitioner`` also remembers the partition of recently seen keys: a
conversion key or an identifier is placed many times in a short while
(lookups, answers, assignments, their changelogs).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from murmurhash2 import murmurhash2

#: Kafka's seed (org.apache.kafka.common.utils.Utils.murmur2).
_SEED = 0x9747B28C
#: Recently placed keys remembered per process (a few MB at most).
CACHE_KEYS = 65_536


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (org.apache.kafka.common.utils.Utils.murmur2)."""
    hashed: int = murmurhash2(data, _SEED)
    return hashed


def partition_of(key: bytes, partitions: int) -> int:
    """The partition (of ``partitions``) Kafka's default partitioner gives ``key``."""
    hashed: int = murmurhash2(key, _SEED)
    return (hashed & 0x7FFFFFFF) % partitions


class Partitioner:
    """aiokafka's ``DefaultPartitioner``, with a bounded cache of recent keys.

    Given as the producer's ``partitioner``: ``(key, all_partitions,
    available) -> partition``. A keyless record goes to a random available
    partition, as with the default.
    """

    def __init__(self, cache_keys: int = CACHE_KEYS) -> None:
        self._partition_of = lru_cache(maxsize=cache_keys)(partition_of)

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)  # noqa: S311 - placement, not secrecy
        if not isinstance(key, bytes):
            key = bytes(key)
        return all_partitions[self._partition_of(key, len(all_partitions))]
