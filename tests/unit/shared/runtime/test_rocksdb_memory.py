"""shared.runtime.rocksdb_memory: one cache and one memtable budget per worker."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import rocksdict

from shared.runtime.app import create_app, raw_table
from shared.runtime.rocksdb_memory import SharedMemory, SharedMemoryOptions
from shared.runtime.settings import Settings


def test_every_table_of_an_app_uses_the_apps_shared_memory(tmp_path: Path) -> None:
    settings = Settings(service="identity_match", data_dir=tmp_path, web_port=6198, dev_mode=True)
    app = create_app(settings)
    tables = [raw_table(app, settings, name) for name in ("keys", "conversions", "user_index")]
    options = [table.data.rocksdb_options for table in tables]
    assert all(isinstance(o, SharedMemoryOptions) for o in options)
    assert {id(o.memory) for o in options} == {id(app.conf.convmesh_rocksdb_memory)}


def test_the_shared_cache_is_sized_by_settings(tmp_path: Path) -> None:
    settings = Settings(
        service="attribute", data_dir=tmp_path, web_port=6197, dev_mode=True, rocksdb_cache_mb=8
    )
    memory = create_app(settings).conf.convmesh_rocksdb_memory
    assert memory.cache_bytes == 8 * 1024 * 1024
    assert memory.memtables_bytes == settings.rocksdb_memtables_mb * 1024 * 1024


def test_the_write_ahead_log_is_off_unless_the_settings_turn_it_on(tmp_path: Path) -> None:
    def memory(**kw: Any) -> SharedMemory:
        settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6196, dev_mode=True, **kw)
        found: SharedMemory = create_app(settings).conf.convmesh_rocksdb_memory
        return found

    assert memory().wal is False
    assert memory(rocksdb_wal=True).wal is True


def test_a_store_opened_with_shared_memory_keeps_what_is_written(tmp_path: Path) -> None:
    options = SharedMemoryOptions(SharedMemory.of_size(cache_mb=4, memtables_mb=4))
    db = options.open(tmp_path / "t-0.db")
    for n in range(2_000):
        db[f"k{n}".encode()] = b"v" * 1_000  # past the 4 MiB budget: flushed to disk
    db.close()
    db = options.open(tmp_path / "t-0.db")
    assert db[b"k0"] == b"v" * 1_000 and db[b"k1999"] == b"v" * 1_000
    db.close()


def index_misses(options: Any) -> int:
    """RocksDB's count of index blocks it had to read because the cache lacked them."""
    found = re.search(r"rocksdb\.block\.cache\.index\.miss COUNT : (\d+)", options.get_statistics())
    assert found, "RocksDB's statistics no longer name the index misses"
    return int(found.group(1))


def test_a_large_file_keeps_its_index_in_the_cache(tmp_path: Path) -> None:
    """A user's parts as attribute keeps them (20,000 owners of 15 keys of ~90 bytes
    each), compacted into one SST file past level 0, where the index is not pinned:
    the keys read once are read again without the index coming back from disk. One
    index block for the file (~560 KiB) outgrew a shard of the 32 MiB cache
    (512 KiB), and every read fetched and decompressed it again."""
    options = SharedMemoryOptions(SharedMemory.of_size(cache_mb=32, memtables_mb=32)).as_options()
    options.enable_statistics()
    db = rocksdict.Rdict(str(tmp_path / "t-0.db"), options=options)
    draw = random.Random(3)
    owners = [f"u.{draw.getrandbits(256):064x}" for _ in range(20_000)]
    keys = [
        f"{owner}|e|{draw.getrandbits(64):016x}".encode() for owner in owners for _ in range(15)
    ]
    batch = rocksdict.WriteBatch(raw_mode=True)
    for key in keys:
        batch.put(key, draw.randbytes(60))
    db.write(batch)
    db.flush()
    db.compact_range(None, None)
    sample = keys[::6_000]
    for key in sample:
        assert db.get(key) is not None
    first = index_misses(options)
    assert first > 0  # the first reads did load index blocks (the counter counts)
    for key in sample:
        db.get(key)
    assert index_misses(options) == first
    db.close()


def older_options(memory: SharedMemory) -> Any:
    """The stores' options before 5632725: one binary-search index block per file."""
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(3, True)
    table.set_block_cache(memory.cache)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
    options.set_block_based_table_factory(table)
    return options


def test_a_store_written_with_one_index_block_per_file_reads_on(tmp_path: Path) -> None:
    """State written before the index was partitioned is read as it is (the index and
    filter kind are recorded in each file), and compacts with new files into new ones."""
    memory = SharedMemory.of_size(cache_mb=4, memtables_mb=4)
    db = rocksdict.Rdict(str(tmp_path / "t-0.db"), options=older_options(memory))
    for n in range(1_000):
        db[f"old{n:04}".encode()] = b"o"
    db.flush()
    db.close()
    db = SharedMemoryOptions(memory).open(tmp_path / "t-0.db")
    assert db[b"old0000"] == b"o" and db.get(b"old9999") is None
    for n in range(1_000):
        db[f"new{n:04}".encode()] = b"n"
    db.flush()
    db.compact_range(None, None)
    assert db[b"old0999"] == b"o" and db[b"new0000"] == b"n" and db.get(b"new9999") is None
    db.close()


_CRASH_AFTER_A_WRITE = """
import os, sys
from pathlib import Path
import rocksdict
from shared.runtime.rocksdb_memory import SharedMemory, SharedMemoryOptions
wal = sys.argv[2] == "wal"
options = SharedMemoryOptions(SharedMemory.of_size(4, 4, wal=wal), wal=wal)
db = options.open(Path(sys.argv[1]))
batch = rocksdict.WriteBatch(raw_mode=True)
batch.put(b"k", b"v")
db.write(batch)
os._exit(0)  # a kill -9: no close, no flush
"""


def _survives_a_crash(path: Path, wal: str) -> bool:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[4]
    subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER_A_WRITE, str(path), wal], check=True, cwd=repo
    )
    db = SharedMemoryOptions(SharedMemory.of_size(cache_mb=4, memtables_mb=4)).open(path)
    try:
        return db.get(b"k") is not None
    finally:
        db.close()


def test_without_the_write_ahead_log_a_crash_loses_the_unflushed_writes(tmp_path: Path) -> None:
    """The setting takes effect: the store then holds only what reached its files (the
    changelog, replayed from the older offset recorded with them, brings back the rest)."""
    assert not _survives_a_crash(tmp_path / "t-0.db", "no-wal")


def test_with_the_write_ahead_log_a_crash_keeps_them(tmp_path: Path) -> None:
    assert _survives_a_crash(tmp_path / "t-0.db", "wal")


def test_a_store_without_the_write_ahead_log_keeps_its_writes_when_it_is_dropped(
    tmp_path: Path,
) -> None:
    """Faust never closes a database: it drops a revoked partition's (and all at stop)
    and collects garbage. The database, dropped, flushes its memtables first."""
    import gc

    memory = SharedMemory.of_size(cache_mb=4, memtables_mb=4, wal=False)
    db = SharedMemoryOptions(memory, wal=False).open(tmp_path / "t-0.db")
    db[b"k"] = b"v"
    del db
    gc.collect()
    db = SharedMemoryOptions(memory).open(tmp_path / "t-0.db")
    assert db[b"k"] == b"v"
    db.close()


def test_only_a_table_written_alone_skips_the_write_ahead_log(tmp_path: Path) -> None:
    """identity_match's keys and watchers share an agent (and a source in topics.yaml):
    both keep the log; its conversions and user_index skip it."""
    settings = Settings(
        service="identity_match",
        data_dir=tmp_path,
        web_port=6194,
        dev_mode=True,
        rocksdb_wal=False,
    )
    app = create_app(settings)
    wal = {
        name: raw_table(app, settings, name).data.rocksdb_options.wal
        for name in ("keys", "watchers", "conversions", "user_index")
    }
    assert wal == {"keys": True, "watchers": True, "conversions": False, "user_index": False}


def test_every_table_keeps_the_write_ahead_log_when_the_settings_ask(tmp_path: Path) -> None:
    settings = Settings(
        service="dedupe", data_dir=tmp_path, web_port=6193, dev_mode=True, rocksdb_wal=True
    )
    assert raw_table(create_app(settings), settings, "seen").data.rocksdb_options.wal is True


def test_a_table_that_needs_the_log_keeps_it_when_the_worker_skips_it_elsewhere(
    tmp_path: Path,
) -> None:
    """The store's own need wins over the worker's setting (keys and watchers)."""
    import subprocess
    import sys

    script = _CRASH_AFTER_A_WRITE.replace(
        "SharedMemoryOptions(SharedMemory.of_size(4, 4, wal=wal), wal=wal)",
        "SharedMemoryOptions(SharedMemory.of_size(4, 4, wal=False), wal=True)",
    )
    assert script != _CRASH_AFTER_A_WRITE
    repo = Path(__file__).resolve().parents[4]
    path = tmp_path / "t-0.db"
    subprocess.run([sys.executable, "-c", script, str(path), "no-wal"], check=True, cwd=repo)
    db = SharedMemoryOptions(SharedMemory.of_size(cache_mb=4, memtables_mb=4)).open(path)
    try:
        assert db.get(b"k") == b"v"
    finally:
        db.close()


def test_a_worker_whose_agent_writes_a_table_alone_and_another_does_not_start(
    tmp_path: Path,
) -> None:
    import pytest

    from shared.runtime.app import raw_tables
    from shared.runtime.errors import ConfigError

    settings = Settings(service="identity_match", data_dir=tmp_path, web_port=6192, dev_mode=True)
    app = create_app(settings)
    assert len(raw_tables(app, settings, "watchers", "keys")) == 2
    other = create_app(settings)
    with pytest.raises(ConfigError, match="conversions"):
        raw_tables(other, settings, "keys", "conversions")
