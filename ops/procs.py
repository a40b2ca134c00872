"""Detached background processes tracked by pid files.

The broker and the service workers outlive the `convmesh` command that starts
them, so each runs in its own session (no terminal signal reaches it, and the
whole process group can be stopped at once) and is remembered by a pid file.
A pid file also records the process start time: a pid reused by an unrelated
process after a reboot or a crash is then not mistaken for ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.contract.errors import ConvmeshError

#: Marks a data dir as convmesh's, so that `down --purge` never deletes anything else.
DATA_DIR_MARKER = ".convmesh"


def claim_data_dir(data_dir: Path) -> None:
    """Create (or adopt) a data dir; refuse a non-empty folder that is not ours."""
    marker = data_dir / DATA_DIR_MARKER
    if data_dir.exists() and not marker.exists() and any(data_dir.iterdir()):
        raise ConvmeshError(
            f"{data_dir} is not empty and not a convmesh data dir; choose another --data-dir"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()


@dataclass(frozen=True, slots=True)
class PidRecord:
    pid: int
    start_ticks: int | None
    argv: tuple[str, ...] = ()


def _start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def _reap(pid: int) -> None:
    """Collect a child that exited, so that it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def read_pid(path: Path) -> PidRecord | None:
    try:
        raw = json.loads(path.read_text())
        return PidRecord(int(raw["pid"]), raw.get("start_ticks"), tuple(raw.get("argv", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` if that very process still runs."""
    record = read_pid(path)
    if record is None or not pid_alive(record.pid):
        return None
    if record.start_ticks is not None and _start_ticks(record.pid) != record.start_ticks:
        return None  # the pid was reused by another process
    return record.pid


def spawn_detached(
    argv: Sequence[str],
    *,
    pid_path: Path,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    record = {"pid": proc.pid, "start_ticks": _start_ticks(proc.pid), "argv": list(argv)}
    tmp = pid_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(pid_path)
    return proc.pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group of a detached process (its children too)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) also succeeds for zombies: look at the members themselves.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid and not _is_zombie(int(entry.name)):
                    return True
            except ProcessLookupError:
                continue
    return False


def stop_pids(pids: Sequence[int], timeout_s: float) -> list[int]:
    """SIGTERM each process group, SIGKILL what is left after ``timeout_s``.

    Returns the pids that needed SIGKILL. Waits until every group is gone.
    """
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    remaining = list(pids)
    while remaining and time.monotonic() < deadline:
        for pid in remaining:
            _reap(pid)
        remaining = [p for p in remaining if _group_alive(p)]
        if remaining:
            time.sleep(0.2)
    killed = list(remaining)
    for pid in killed:
        _signal_group(pid, signal.SIGKILL)
    while remaining:
        for pid in remaining:
            _reap(pid)
        remaining = [p for p in remaining if _group_alive(p)]
        if remaining:
            time.sleep(0.1)
    return killed


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
