"""shared.runtime.rocksdb_memory: one cache and one memtable budget per worker."""

from __future__ import annotations

from pathlib import Path

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


def test_a_store_opened_with_shared_memory_keeps_what_is_written(tmp_path: Path) -> None:
    options = SharedMemoryOptions(SharedMemory.of_size(cache_mb=4, memtables_mb=4))
    db = options.open(tmp_path / "t-0.db")
    for n in range(2_000):
        db[f"k{n}".encode()] = b"v" * 1_000  # past the 4 MiB budget: flushed to disk
    db.close()
    db = options.open(tmp_path / "t-0.db")
    assert db[b"k0"] == b"v" * 1_000 and db[b"k1999"] == b"v" * 1_000
    db.close()
