"""Idle memtables: flushed, so that the worker's shared memtable budget goes to the
databases being written.

Every RocksDB database of a worker draws its memtables from one budget
(``shared.runtime.rocksdb_memory``). When the budget is full, RocksDB makes the
database that is *writing* flush its own memtable, however small, and never one
that holds much but is no longer written. After a load, the tables it filled
(identity_match's ``keys`` with the identity signals) kept their memtables while
the tables written per conversion flushed a few kilobytes at every write: nearly
20,000 flushes of 10 KiB on average in one bench run, each a new SST file and
write-ahead log, and later compactions (docs/benchmarks.md, "Idle memtables").

A database written without the write-ahead log (``shared.runtime.rocksdb_memory``)
is also flushed once its oldest unflushed write is ``MAX_UNFLUSHED_S`` old, however
small its memtable: a kill -9 loses what is unflushed, and the restart replays it
from the changelog. That replay must find every record it needs, tombstones
included, and the log cleaner drops a compacted changelog's tombstones after
``delete.retention.ms`` (a day by default). Without the bound, a quiet partition
could keep a deletion unflushed for days, and a crash after the cleaner's pass would
bring the deleted keys back.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

#: How often a worker looks for idle memtables (seconds).
IDLE_CHECK_INTERVAL_S = 5.0
#: A memtable smaller than this is not worth an SST file of its own.
IDLE_FLUSH_MIN_BYTES = 256 * 1024
#: The oldest write a database without the write-ahead log keeps unflushed (seconds,
#: give or take a look's interval): far below any changelog's delete.retention.ms.
MAX_UNFLUSHED_S = 60.0

ENTRIES = "rocksdb.num-entries-active-mem-table"
SIZE = "rocksdb.cur-size-active-mem-table"


@dataclass
class IdleMemtables:
    """Remembers each database's memtable entries between two looks: one whose count
    did not move (no write, no delete in between) is idle. Remembers too since when
    each memtable has held writes, for the databases without the write-ahead log."""

    min_bytes: int = IDLE_FLUSH_MIN_BYTES
    max_unflushed_s: float = MAX_UNFLUSHED_S
    _entries: dict[int, int] = field(default_factory=dict)
    _unflushed_since: dict[int, float] = field(default_factory=dict)

    def idle(
        self, dbs: Iterable[Any], unlogged: Collection[int] = (), now: float | None = None
    ) -> list[Any]:
        """The databases among ``dbs`` to flush: those whose memtable holds at least
        ``min_bytes`` and was not written since the last look, and those among
        ``unlogged`` (by ``id``: written without the write-ahead log) whose memtable has
        held writes for ``max_unflushed_s`` or more."""
        now = time.monotonic() if now is None else now
        seen: dict[int, int] = {}
        since: dict[int, float] = {}
        found = []
        for db in dbs:
            key = id(db)
            entries = seen[key] = db.property_int_value(ENTRIES) or 0
            if not entries:
                continue
            since[key] = self._unflushed_since.get(key, now)
            if entries == self._entries.get(key):
                if (db.property_int_value(SIZE) or 0) >= self.min_bytes:
                    found.append(db)
                    continue
            if key in unlogged and now - since[key] >= self.max_unflushed_s:
                found.append(db)
                since[key] = now  # asked once; its memtable empties as the flush starts
        self._entries = seen
        self._unflushed_since = since
        return found


def flush_idle(
    memtables: IdleMemtables,
    dbs: Iterable[Any],
    log: Any = None,
    unlogged: Collection[int] = (),
) -> int:
    """Start a flush of every memtable among ``dbs`` that ``memtables.idle`` names (not
    waited for); how many were started. A database that refuses (opened read-only by
    Faust after a lock timeout, say) is logged and left: this upkeep must never stop a
    worker."""
    started = 0
    for db in memtables.idle(dbs, unlogged):
        try:
            db.flush(False)
        except Exception as exc:
            if log is not None:
                log.warning("memtable_flush_failed", error=type(exc).__name__)
        else:
            started += 1
    return started
