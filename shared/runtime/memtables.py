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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: How often a worker looks for idle memtables (seconds).
IDLE_CHECK_INTERVAL_S = 5.0
#: A memtable smaller than this is not worth an SST file of its own.
IDLE_FLUSH_MIN_BYTES = 256 * 1024

ENTRIES = "rocksdb.num-entries-active-mem-table"
SIZE = "rocksdb.cur-size-active-mem-table"


@dataclass
class IdleMemtables:
    """Remembers each database's memtable entries between two looks: one whose count
    did not move (no write, no delete in between) is idle."""

    min_bytes: int = IDLE_FLUSH_MIN_BYTES
    _entries: dict[int, int] = field(default_factory=dict)

    def idle(self, dbs: Iterable[Any]) -> list[Any]:
        """The databases among ``dbs`` whose memtable holds at least ``min_bytes`` and
        was not written since the last look."""
        seen: dict[int, int] = {}
        found = []
        for db in dbs:
            entries = db.property_int_value(ENTRIES) or 0
            if entries and entries == self._entries.get(id(db)):
                if (db.property_int_value(SIZE) or 0) >= self.min_bytes:
                    found.append(db)
            seen[id(db)] = entries
        self._entries = seen
        return found


def flush_idle(memtables: IdleMemtables, dbs: Iterable[Any], log: Any = None) -> int:
    """Start a flush of every idle memtable among ``dbs`` (not waited for); how many
    were started. A database that refuses (opened read-only by Faust after a lock
    timeout, say) is logged and left: this upkeep must never stop a worker."""
    started = 0
    for db in memtables.idle(dbs):
        try:
            db.flush(False)
        except Exception as exc:
            if log is not None:
                log.warning("memtable_flush_failed", error=type(exc).__name__)
        else:
            started += 1
    return started
