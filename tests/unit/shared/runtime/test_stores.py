"""Damaged RocksDB stores are set aside at worker start (shared/runtime/stores.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.stores.rocksdb import RocksDBOptions
from structlog.testing import capture_logs

from shared.runtime.logging import get_logger
from shared.runtime.stores import (
    set_aside_stores_of_another_app,
    set_aside_unopenable_stores,
    store_folders,
)


def make_store(worker_dir: Path, name: str) -> Path:
    path = worker_dir / "v1" / "tables" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    db = RocksDBOptions(use_rocksdict=True).open(path)
    for i in range(2000):
        db.put(f"k{i}".encode(), b"v" * 100)
    db.flush()
    db.close()
    return path


def truncate_sst(path: Path) -> None:
    with next(path.glob("*.sst")).open("r+b") as f:
        f.truncate(100)


def remove_current(path: Path) -> None:
    (path / "CURRENT").unlink()


def garble_manifest(path: Path) -> None:
    next(path.glob("MANIFEST-*")).write_bytes(b"not a manifest")


@pytest.mark.parametrize("damage", [truncate_sst, remove_current, garble_manifest])
def test_a_damaged_store_is_moved_aside_with_a_log_line(tmp_path, damage):
    healthy = make_store(tmp_path, "seen-0.db")
    damaged = make_store(tmp_path, "seen-1.db")
    damage(damaged)
    with capture_logs() as logs:
        moved = set_aside_unopenable_stores(tmp_path, get_logger(component="stores"))
    assert store_folders(tmp_path) == [healthy]
    assert [p.parent for p in moved] == [tmp_path / "damaged"] and moved[0].exists()
    assert [e["event"] for e in logs] == ["state_rebuilt_from_changelog"]
    assert logs[0]["store"] == "seen-1.db"


def test_healthy_stores_are_left_alone_and_keep_their_data(tmp_path):
    path = make_store(tmp_path, "seen-0.db")
    assert set_aside_unopenable_stores(tmp_path, get_logger()) == []
    db = RocksDBOptions(use_rocksdict=True).open(path)
    assert db.get(b"k5") == b"v" * 100
    db.close()


def test_a_worker_without_stores_starts_as_before(tmp_path):
    assert set_aside_unopenable_stores(tmp_path / "new-worker", get_logger()) == []


def test_stores_of_another_namespace_are_set_aside(tmp_path):
    """Faust keeps the changelog offset inside the store: another run's would be trusted."""
    make_store(tmp_path, "seen-0.db")
    assert set_aside_stores_of_another_app(tmp_path, "a-convmesh-dedupe", get_logger()) == []
    with capture_logs() as logs:
        moved = set_aside_stores_of_another_app(tmp_path, "b-convmesh-dedupe", get_logger())
    assert len(moved) == 1 and store_folders(tmp_path) == []
    assert [e["event"] for e in logs] == ["state_rebuilt_from_changelog"]


def test_the_same_app_keeps_its_stores_across_restarts(tmp_path):
    make_store(tmp_path, "seen-0.db")
    for _ in range(2):
        assert set_aside_stores_of_another_app(tmp_path, "a-convmesh-dedupe", get_logger()) == []
    assert len(store_folders(tmp_path)) == 1
