"""shared.runtime.app: tables whose batch writes land together."""

from __future__ import annotations

from pathlib import Path

from shared.runtime.app import create_app, raw_table
from shared.runtime.settings import Settings


def test_write_store_lands_a_partitions_writes_in_its_database(tmp_path: Path) -> None:
    """A batch's writes (and deletes) reach the partition's database and key index."""
    settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6196, dev_mode=True)
    table = raw_table(create_app(settings), settings, "seen")
    table.write_store([(3, b"a", b"1"), (3, b"b", b"2"), (5, b"c", b"3")])
    table.write_store([(3, b"a", None)])
    store = table.data
    assert store._db_for_partition(3).get(b"b") == b"2"
    assert store._db_for_partition(3).get(b"a") is None
    assert store._db_for_partition(5).get(b"c") == b"3"
    assert store._key_index[b"c"] == 5 and b"a" not in store._key_index
