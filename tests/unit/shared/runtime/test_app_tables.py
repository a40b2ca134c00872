"""shared.runtime.app: tables whose batch writes land together."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from shared.runtime.app import LARGE_VALUE_BYTES, create_app, raw_table, warn_of_large_values
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


def test_read_gets_a_key_from_its_partitions_database_only(tmp_path: Path) -> None:
    """One get in the partition's database; the same key elsewhere is not seen."""
    settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6196, dev_mode=True)
    table = raw_table(create_app(settings), settings, "seen")
    table.write_store([(3, b"a", b"1"), (5, b"b", b"2")])
    assert table.read(3, b"a") == b"1"
    assert table.read(5, b"a") is None
    assert table.read(3, b"missing") is None


def test_read_prefix_seeks_in_its_partitions_database(tmp_path: Path) -> None:
    """The keys with the prefix, in order; the same prefix in another partition is not read."""
    settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6196, dev_mode=True)
    table = raw_table(create_app(settings), settings, "seen")
    table.write_store([(3, b"a|2", b"2"), (3, b"a|1", b"1"), (3, b"b|1", b"x"), (5, b"a|3", b"3")])
    assert table.read_prefix(3, b"a|") == [(b"a|1", b"1"), (b"a|2", b"2")]


def test_a_table_value_past_a_mebibyte_is_logged_by_table_and_size_never_by_key() -> None:
    big = b"x" * (LARGE_VALUE_BYTES + 1)
    with capture_logs() as logs:
        warn_of_large_values("users", [(3, b"user-1", big), (4, b"user-2", b"{}"), (5, b"k", None)])
    assert logs == [
        {
            "event": "large_table_value",
            "table": "users",
            "partition": 3,
            "bytes": LARGE_VALUE_BYTES + 1,
            "log_level": "warning",
        }
    ]
