"""bench.rocksdb_memory: the RocksDB-alone memory check runs and reports every slice."""

from __future__ import annotations

import pytest

from bench.rocksdb_memory import anon_mb, main


def test_it_reports_the_memory_after_each_slice(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--keys", "2000", "--dbs", "2", "--steps", "2", "--value-bytes", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 databases open")
    assert [line.split(" keys")[0] for line in lines[1:]] == ["1,000", "2,000"]


def test_anonymous_memory_of_this_process_is_positive() -> None:
    assert anon_mb() > 0
