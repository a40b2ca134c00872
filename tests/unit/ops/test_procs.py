"""Detached processes and pid files (real short-lived processes, no broker)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ops.procs import log_tail, pid_alive, read_pid, running_pid, spawn_detached, stop_pids


def spawn(tmp_path: Path, code: str, name: str = "p") -> tuple[int, Path]:
    pid_path = tmp_path / f"{name}.pid"
    pid = spawn_detached(
        [sys.executable, "-c", code],
        pid_path=pid_path,
        log_path=tmp_path / "logs" / f"{name}.log",
        env=os.environ,
    )
    return pid, pid_path


def test_spawned_process_is_detached_and_tracked(tmp_path: Path) -> None:
    pid, pid_path = spawn(tmp_path, "print('hello', flush=True); import time; time.sleep(30)")
    try:
        assert running_pid(pid_path) == pid
        assert os.getsid(pid) == pid  # own session: no terminal signal reaches it
        assert read_pid(pid_path).argv[0] == sys.executable
        deadline = time.monotonic() + 10
        while "hello" not in log_tail(tmp_path / "logs" / "p.log"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        assert stop_pids([pid], timeout_s=5) == []
    assert not pid_alive(pid)
    assert running_pid(pid_path) is None


def test_reused_pid_is_not_ours(tmp_path: Path) -> None:
    pid_path = tmp_path / "other.pid"
    # Our own pid with another start time: a live process, but not the recorded one.
    pid_path.write_text(json.dumps({"pid": os.getpid(), "start_ticks": 1, "argv": []}))
    assert running_pid(pid_path) is None
    pid_path.write_text("not json")
    assert read_pid(pid_path) is None and running_pid(pid_path) is None
    assert running_pid(tmp_path / "missing.pid") is None


def test_sigterm_ignored_means_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    pid, _ = spawn(tmp_path, code, "stubborn")
    log = tmp_path / "logs" / "stubborn.log"
    deadline = time.monotonic() + 10
    while not log_tail(log).strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(log_tail(log).strip())
    started = time.monotonic()
    assert stop_pids([pid], timeout_s=1.0) == [pid]
    assert time.monotonic() - started < 10
    assert not pid_alive(pid)
    assert not pid_alive(child)  # the group went down with it


def test_log_tail_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "nothing.log") == ""
    (tmp_path / "some.log").write_text("\n".join(str(i) for i in range(50)))
    assert log_tail(tmp_path / "some.log", lines=3) == "47\n48\n49"
