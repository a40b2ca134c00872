"""`convmesh logs`: which files, tail, follow."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ops.commands.logs import follow, log_paths, new_lines, tail
from ops.errors import MeshError
from shared.runtime.settings import Settings


def settings_with_logs(tmp_path: Path, *names: str) -> Settings:
    (tmp_path / "logs").mkdir()
    for name in names:
        (tmp_path / "logs" / f"{name}.log").write_text(f'{{"w":"{name}"}}\n')
    return Settings(data_dir=tmp_path)


def test_every_worker_of_the_service_in_worker_order(tmp_path: Path) -> None:
    settings = settings_with_logs(tmp_path, "dedupe-10", "dedupe-2", "dedupe-0", "ingest-0")
    assert [p.stem for p in log_paths(settings, "dedupe", None)] == [
        "dedupe-0",
        "dedupe-2",
        "dedupe-10",
    ]


def test_one_worker_only(tmp_path: Path) -> None:
    settings = settings_with_logs(tmp_path, "dedupe-0", "dedupe-1")
    assert [p.stem for p in log_paths(settings, "dedupe", 1)] == ["dedupe-1"]


def test_no_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MeshError):
        log_paths(settings_with_logs(tmp_path), "dedupe", None)


def test_several_workers_prefix_their_lines(tmp_path: Path) -> None:
    settings = settings_with_logs(tmp_path, "dedupe-0", "dedupe-1")
    out = io.StringIO()
    tail(log_paths(settings, "dedupe", None), 10, out)
    assert out.getvalue().splitlines() == [
        'dedupe-0 | {"w":"dedupe-0"}',
        'dedupe-1 | {"w":"dedupe-1"}',
    ]


def test_a_partial_line_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"one\ntw")
    lines, offset = new_lines(path, 0)
    assert lines == ["one"] and offset == 4
    path.write_bytes(b"one\ntwo\n")
    assert new_lines(path, offset) == (["two"], 8)


def test_follow_prints_appended_lines(tmp_path: Path) -> None:
    settings = settings_with_logs(tmp_path, "attribute-0")
    paths = log_paths(settings, "attribute", None)
    out = io.StringIO()
    ends = tail(paths, 0, out)

    def append(_: float) -> None:
        with paths[0].open("a") as file:
            file.write("later\n")

    follow(paths, ends, out, sleep=append, rounds=iter(range(2)))
    assert out.getvalue().splitlines() == ["later"]
