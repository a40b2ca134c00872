"""One memory budget for all the RocksDB stores of a worker.

Faust opens one database per table partition, each with its own 2 GiB block
cache and three 64 MiB write buffers (``faust/stores/rocksdb.py``): memory
grows with partitions times tables (24 databases in identity_match) and with
the state. Here every database of a worker shares one block cache and one
write-buffer manager, sized by ``CONVMESH_ROCKSDB_CACHE_MB`` and
``CONVMESH_ROCKSDB_MEMTABLES_MB``: RSS stays flat as the state grows, and the
state lives on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

MIB = 1024 * 1024
#: Per database: small memtables, so that many partitions stay within the
#: shared budget. A full budget makes the database being written flush its own
#: memtable, not the largest: idle ones are flushed by ``shared.runtime.memtables``.
WRITE_BUFFER_SIZE = 4 * MIB
MAX_WRITE_BUFFERS = 2
#: The memtables' allocation unit. RocksDB's default (an eighth of the write buffer,
#: 512 KiB here, in several core-local shards) is reserved by every memtable that
#: holds a single key: with 32-56 databases per worker the empty memtables alone
#: filled the shared budget, so every write made its database flush a memtable of a
#: few dozen keys (2,000 flushes of 64 KiB on average in two minutes of
#: identity_match: docs/benchmarks.md, the memtables' budget).
ARENA_BLOCK_SIZE = 64 * 1024
#: The size of one partition of an SST file's index and bloom filter.
METADATA_BLOCK_SIZE = 4096


@dataclass(frozen=True)
class SharedMemory:
    """The cache and the memtable budget every store of one worker uses."""

    cache: Any
    write_buffers: Any
    cache_bytes: int
    memtables_bytes: int
    #: Every store's writes go to RocksDB's write-ahead log too, even those of a table
    #: written alone (``SharedMemoryOptions.open``).
    wal: bool = True

    @classmethod
    def of_size(cls, cache_mb: int, memtables_mb: int, *, wal: bool = True) -> SharedMemory:
        return cls(
            wal=wal,
            cache_bytes=cache_mb * MIB,
            memtables_bytes=memtables_mb * MIB,
            cache=rocksdict.Cache(cache_mb * MIB),
            # allow_stall=False: writers are never blocked, flushes are forced instead.
            write_buffers=rocksdict.WriteBufferManager(memtables_mb * MIB, False),
        )


class SharedMemoryOptions(RocksDBOptions):
    """Faust's options for rocksdict, with the worker's shared cache and budget."""

    def __init__(self, memory: SharedMemory, *, wal: bool = True, **kwargs: Any) -> None:
        super().__init__(
            write_buffer_size=WRITE_BUFFER_SIZE,
            max_write_buffer_number=MAX_WRITE_BUFFERS,
            use_rocksdict=True,
            **kwargs,
        )
        self.memory = memory
        #: Whether this store's writes go to the write-ahead log (see ``open``).
        self.wal = wal or memory.wal

    def open(self, path: Path, *, read_only: bool = False) -> Any:
        """Faust's database; its writes skip the write-ahead log unless ``self.wal``.

        The changelog, not the local store, is what a table's state is rebuilt from:
        an input's offset is committed only once its changelog records are acked
        (Kafka Streams leaves the log out of its stores for the same reason). Without
        the log, a kill -9 loses the writes since the database's last memtable flush,
        and with them the persisted offset recorded in the same database
        (``set_persisted_offset``, written after the writes it covers): the store goes
        back to a prefix of its writes, as if the crash had come earlier, and the
        restart replays the changelog from that prefix's offset. Inputs whose
        changelog records never left are not committed, and are delivered again.

        That holds for one database at a time. Each table partition is its own
        database and flushes on its own, so a store skips the log only when one
        input's state lives in that one database: a table that no other table of its
        service shares a source with (``Registry.written_alone``). An agent that
        writes several tables in one batch relies on their order surviving a crash
        (identity_match's watchers before its keys; aggregate's members before their
        totals); those keep the log, and ``process`` refuses to start an agent given
        several tables of which one skips it.
        """
        db = super().open(path, read_only=read_only)
        if not self.wal:
            db.set_write_options(without_wal())
        return db

    def as_options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(self.max_open_files or -1)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_arena_block_size(ARENA_BLOCK_SIZE)
        options.set_write_buffer_manager(self.memory.write_buffers)
        table = rocksdict.BlockBasedOptions()
        # A full filter (not block-based), which the partitioned filters below need;
        # RocksDB 7+ builds a full filter either way.
        table.set_bloom_filter(self.bloom_filter_size, False)
        table.set_block_cache(self.memory.cache)
        # Index and bloom filter blocks live in the (bounded) cache too; by
        # default every open SST file keeps its own outside it, which grows with
        # the state (measured: RSS rose with the links loaded).
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        # In partitions of a metadata block each, under a small pinned top level.
        # One index block per SST file outgrows a shard of the cache (512 KiB of
        # 32 MiB) once the file passes about 8 MiB: it is then dropped as soon as
        # it is used, and every get and seek read it again, decompressed and
        # checksummed it (0.5-1.1 ms a read at 12 MiB, against 8 us partitioned:
        # docs/benchmarks.md, "The index outgrew the cache").
        table.set_index_type(rocksdict.BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(METADATA_BLOCK_SIZE)
        table.set_pin_top_level_index_and_filter(True)
        options.set_block_based_table_factory(table)
        return options


def without_wal() -> Any:
    options = rocksdict.WriteOptions()
    # A property at run time; rocksdict's stub declares it a method.
    options.disable_wal = True  # type: ignore[method-assign,assignment]
    return options


def partition_databases(table: Any) -> list[Any] | None:
    """The open RocksDB database of each of ``table``'s partitions on this worker (Faust
    keeps them in its store's ``_dbs``); None for a store without them (in memory)."""
    dbs = getattr(getattr(table, "data", None), "_dbs", None)
    return None if dbs is None else list(dbs.values())
