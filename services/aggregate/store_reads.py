"""Prefix reads of one account's keys in a RocksDB table (no full scan).

The tables of aggregate keyed ``"{ad_account_id}..."`` live on the partition
of the account (their changelog partition is the account-keyed input's), so
an account's keys are all in one partition's RocksDB, sorted: seek to the
prefix and read while keys carry it. Run it off the event loop
(``asyncio.to_thread``): an account's keys can be many.
"""

from __future__ import annotations

from typing import Any

from shared.kafka.partitioner import partition_of


def prefix_items(table: Any, account: str, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of ``table`` whose key starts with ``prefix``.

    Reads the account's partition store from the prefix on; a table without
    RocksDB partitions (the in-memory tables of tests) is filtered instead.
    """
    dbs = getattr(getattr(table, "data", None), "_dbs", None)
    if dbs is None:
        return [(k, v) for k, v in table.items() if k.startswith(prefix)]
    partition = partition_of(account.encode(), table.partitions)
    if partition not in dbs:
        return []  # this worker holds no store for it (and opens none for a read)
    found: list[tuple[bytes, bytes]] = table.read_prefix(partition, prefix)
    return found
