"""`convmesh logs SERVICE [--worker N] [-n LINES] [-f]`: a service's worker logs.

Each worker writes JSON lines to ``<data dir>/logs/<service>-<N>.log``. With
several workers every line is prefixed with its worker (``dedupe-1 | ...``);
``-f`` keeps printing what the workers append until interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from ops import mesh
from ops.commands.common import add_data_dir, settings_from
from ops.errors import MeshError
from shared.runtime.settings import SERVICES, Settings

FOLLOW_POLL_S = 0.5


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("logs", help="show a service's worker logs (-f follows)")
    add_data_dir(parser)
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--worker", type=int, default=None, help="only this worker")
    parser.add_argument("-n", "--lines", type=int, default=50, help="last lines per worker")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    parser.set_defaults(func=run_logs)


def log_paths(settings: Settings, service: str, worker: int | None) -> list[Path]:
    """The log files of the service's workers (or of one), worker order."""
    if worker is not None:
        paths = [mesh.worker_log_path(settings, service, worker)]
    else:
        found = (settings.data_dir / "logs").glob(f"{service}-*.log")
        numbered = [p for p in found if p.stem.rpartition("-")[2].isdigit()]
        paths = sorted(numbered, key=lambda p: int(p.stem.rpartition("-")[2]))
    existing = [p for p in paths if p.exists()]
    if not existing:
        raise MeshError(f"no log of {service} under {settings.data_dir / 'logs'}")
    return existing


def prefixed(path: Path, line: str, several: bool) -> str:
    return f"{path.stem} | {line}" if several else line


def tail(paths: list[Path], lines: int, out: TextIO) -> dict[Path, int]:
    """Print the last ``lines`` of each file; where each file ends (to follow from)."""
    ends = {}
    for path in paths:
        data = path.read_bytes()
        ends[path] = len(data)
        for line in data.decode(errors="replace").splitlines()[-lines:] if lines > 0 else []:
            out.write(prefixed(path, line, len(paths) > 1) + "\n")
    out.flush()
    return ends


def new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines appended to ``path`` after ``offset``; the new offset.

    A partial last line waits for its end; a file that shrank (truncated,
    recreated by a restart after a purge) is read again from its start.
    """
    size = path.stat().st_size if path.exists() else 0
    if size < offset:
        offset = 0
    with path.open("rb") as file:
        file.seek(offset)
        chunk = file.read(size - offset)
    complete = chunk[: chunk.rfind(b"\n") + 1]
    return complete.decode(errors="replace").splitlines(), offset + len(complete)


def follow(
    paths: list[Path],
    ends: dict[Path, int],
    out: TextIO,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rounds: Iterator[int] | None = None,
) -> None:
    """Print lines as the workers append them (``rounds`` bounds it in tests)."""
    for _ in rounds if rounds is not None else iter(int, 1):
        for path in paths:
            if not path.exists():
                continue
            lines, ends[path] = new_lines(path, ends.get(path, 0))
            for line in lines:
                out.write(prefixed(path, line, len(paths) > 1) + "\n")
        out.flush()
        sleep(FOLLOW_POLL_S)


def run_logs(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    paths = log_paths(settings, args.service, args.worker)
    ends = tail(paths, args.lines, sys.stdout)
    if args.follow:
        follow(paths, ends, sys.stdout)
    return 0
