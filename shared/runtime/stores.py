"""Start-up check of a worker's RocksDB stores: an unopenable one is set aside.

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
        if reason is None:
            continue
        aside = worker_data_dir / "damaged" / f"{path.name}.{time.time_ns()}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(aside))
        log.warning(
            "state_rebuilt_from_changelog", store=path.name, moved_to=str(aside), error=reason
        )
        moved.append(aside)
    return moved
