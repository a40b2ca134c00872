"""Start-up check of a worker's RocksDB stores: an unopenable or foreign one is set aside.

A store folder can be damaged outside of Faust (a disk filled up, a truncated
SST file, a missing CURRENT file, files copied from elsewhere). Faust would
raise on opening it at every start: a crash loop. Every table is a changelog's
copy, so the store is moved aside (kept for inspection, not deleted) and Faust,
finding no store and no persisted offset, recovers the partition from the
changelog's beginning.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from faust.stores.rocksdb import RocksDBOptions

APP_ID_FILE = "app-id"

#: rocksdict raises a bare Exception whose text starts with the RocksDB status.
UNOPENABLE = ("Corruption", "Invalid argument", "IO error: No such file")


def store_folders(worker_data_dir: Path) -> list[Path]:
    """Every table partition store of a worker (Faust: <datadir>/v1/tables/<table>-<p>.db)."""
    return sorted(p for p in worker_data_dir.glob("v*/tables/*.db") if p.is_dir())


def unopenable_reason(path: Path) -> str | None:
    """Why RocksDB cannot open the store at ``path`` (as Faust opens it), or None."""
    try:
        db = RocksDBOptions(use_rocksdict=True).open(path)
    except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
        text = str(exc)
        if text.startswith(UNOPENABLE):
            return text.splitlines()[0][:300]
        raise  # a lock held by a live process or the like: not ours to repair
    db.close()
    return None


def set_aside_unopenable_stores(worker_data_dir: Path, log: Any) -> list[Path]:
    """Move every store RocksDB cannot open out of Faust's way; the new paths."""
    moved = []
    for path in store_folders(worker_data_dir):
        reason = unopenable_reason(path)
        if reason is not None:
            moved.append(_set_aside(worker_data_dir, path, reason, log))
    return moved


def set_aside_stores_of_another_app(worker_data_dir: Path, app_id: str, log: Any) -> list[Path]:
    """Move every store aside when the folder last served another app (namespace).

    Faust keeps a partition's changelog offset inside the store, not per topic:
    a store left by another namespace would make Faust skip that many records of
    this app's changelog and keep the other run's keys. The folder is marked
    with the app id it serves (a folder without a mark is adopted as is).
    """
    mark = worker_data_dir / APP_ID_FILE
    previous = mark.read_text().strip() if mark.exists() else None
    moved = []
    if previous is not None and previous != app_id:
        reason = f"the stores belong to {previous}, not {app_id}"
        moved = [
            _set_aside(worker_data_dir, p, reason, log) for p in store_folders(worker_data_dir)
        ]
    worker_data_dir.mkdir(parents=True, exist_ok=True)
    mark.write_text(app_id + "\n")
    return moved


def _set_aside(worker_data_dir: Path, path: Path, reason: str, log: Any) -> Path:
    aside = worker_data_dir / "damaged" / f"{path.name}.{time.time_ns()}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(aside))
    log.warning("state_rebuilt_from_changelog", store=path.name, moved_to=str(aside), error=reason)
    return aside
