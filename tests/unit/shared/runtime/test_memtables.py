"""shared.runtime.memtables: idle memtables are flushed, written ones are not."""

from __future__ import annotations

from pathlib import Path

import rocksdict

from shared.runtime.memtables import ENTRIES, IdleMemtables, flush_idle


def open_db(path: Path) -> rocksdict.Rdict:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    return rocksdict.Rdict(str(path), options=options)


def write(db: rocksdict.Rdict, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        db[b"key-%d" % i] = b"v" * 100


def test_a_memtable_is_idle_only_at_the_second_look_without_writes(tmp_path: Path) -> None:
    db = open_db(tmp_path / "a")
    write(db, 50)
    memtables = IdleMemtables(min_bytes=1)
    assert memtables.idle([db]) == []  # the first look only remembers
    assert memtables.idle([db]) == [db]


def test_a_memtable_written_between_two_looks_is_not_idle(tmp_path: Path) -> None:
    db = open_db(tmp_path / "a")
    write(db, 50)
    memtables = IdleMemtables(min_bytes=1)
    memtables.idle([db])
    db.delete(b"key-3")  # a delete is a write too
    assert memtables.idle([db]) == []


def test_an_empty_or_small_memtable_is_left_alone(tmp_path: Path) -> None:
    empty, small = open_db(tmp_path / "empty"), open_db(tmp_path / "small")
    write(small, 5)
    memtables = IdleMemtables(min_bytes=1 << 20)
    memtables.idle([empty, small])
    assert memtables.idle([empty, small]) == []


def test_flush_idle_empties_the_idle_memtables_and_keeps_their_values(tmp_path: Path) -> None:
    idle, busy = open_db(tmp_path / "idle"), open_db(tmp_path / "busy")
    write(idle, 200)
    write(busy, 200)
    memtables = IdleMemtables(min_bytes=1)
    flush_idle(memtables, [idle, busy])
    write(busy, 10, start=1000)
    assert flush_idle(memtables, [idle, busy]) == 1
    idle.flush(True)  # flush_idle does not wait: wait here for the one it started
    assert idle.property_int_value(ENTRIES) == 0
    assert busy.property_int_value(ENTRIES) == 210
    assert idle[b"key-7"] == b"v" * 100


class RefusingDb:
    """A database whose memtable never changes and whose flush fails."""

    def property_int_value(self, name: str) -> int:
        return 1 << 20

    def flush(self, wait: bool) -> None:
        raise RuntimeError("read-only")


def test_a_database_that_refuses_to_flush_is_logged_and_the_rest_flushed(
    tmp_path: Path,
) -> None:
    good, bad = open_db(tmp_path / "good"), RefusingDb()
    write(good, 200)
    memtables, lines = IdleMemtables(min_bytes=1), []

    class Log:
        def warning(self, event: str, **fields: object) -> None:
            lines.append((event, fields))

    flush_idle(memtables, [bad, good], Log())
    assert flush_idle(memtables, [bad, good], Log()) == 1
    assert lines == [("memtable_flush_failed", {"error": "RuntimeError"})]


def test_a_database_without_the_write_ahead_log_is_flushed_once_its_writes_are_old(
    tmp_path: Path,
) -> None:
    """However small and busy: a kill -9 must never lose more than a bounded while of
    writes, which the changelog (tombstones included) can still replay."""
    unlogged, logged = open_db(tmp_path / "unlogged"), open_db(tmp_path / "logged")
    memtables = IdleMemtables(min_bytes=1 << 30, max_unflushed_s=60)
    for n, now in enumerate((0.0, 30.0, 59.0, 61.0)):
        write(unlogged, 1, start=n)  # written between every two looks: never idle
        write(logged, 1, start=n)
        found = memtables.idle([unlogged, logged], {id(unlogged)}, now=now)
        assert found == ([unlogged] if now >= 60 else [])


def test_the_age_of_unflushed_writes_starts_again_after_a_flush(tmp_path: Path) -> None:
    db = open_db(tmp_path / "a")
    memtables = IdleMemtables(min_bytes=1 << 30, max_unflushed_s=60)
    write(db, 1)
    memtables.idle([db], {id(db)}, now=0.0)
    assert memtables.idle([db], {id(db)}, now=60.0) == [db]
    db.flush(True)
    write(db, 1, start=10)
    assert memtables.idle([db], {id(db)}, now=100.0) == []  # counted from the flush at 60
    assert memtables.idle([db], {id(db)}, now=165.0) == [db]
