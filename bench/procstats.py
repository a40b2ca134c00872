"""The workers' and relays' processes as the kernel sees them: CPU seconds, peak RSS,
the machine's load; and py-spy attached to them during a push."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bench import figures
from ops import mesh
from ops.procs import running_pid
from shared.runtime.settings import REPO_ROOT, Settings

T = TypeVar("T")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def worker_pids(settings: Settings, workers: dict[str, int]) -> list[tuple[str, int]]:
    out = []
    for service, n in workers.items():
        for w in range(n):
            pid = running_pid(mesh.worker_pid_path(settings, service, w))
            if pid is not None:
                out.append((service, pid))
    return out


def listening_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The pid of the process listening on TCP ``port`` on this machine (the local
    broker), or None: not listening here, or owned by a process this one cannot see."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            inodes |= figures.listening_inodes((proc / "net" / table).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:  # closed since it was listed: a busy broker opens and closes many
                continue
            if target in wanted:
                return int(entry.name)
    return None


#: What a Kafka broker's command line runs; a port can also be held by a proxy
#: (docker-proxy in front of a broker in a container), whose CPU is not the broker's.
KAFKA_MAIN = b"kafka.Kafka"


def is_kafka_broker(pid: int, proc: Path = Path("/proc")) -> bool:
    try:
        return KAFKA_MAIN in (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def broker_pids(bootstrap: str, proc: Path = Path("/proc")) -> list[tuple[str, int]]:
    """``("broker", pid)`` for each bootstrap server that listens on this machine and is
    a Kafka broker's own process; ``[]`` when none is (a remote broker's CPU is not this
    machine's, a proxy's is not the broker's): the report then says "-"."""
    found: list[tuple[str, int]] = []
    for server in bootstrap.split(","):
        server = server.strip()
        host, _, port = server.rpartition(":") if ":" in server else (server, ":", "9092")
        if not figures.is_loopback(host) or not port.isdigit():
            continue
        pid = listening_pid(int(port), proc)
        if pid is not None and is_kafka_broker(pid, proc) and ("broker", pid) not in found:
            found.append(("broker", pid))
    return found


def per_pid(
    pids: Sequence[tuple[str, int]], name: str, parse: Callable[[str], T], unreadable: T
) -> dict[int, T]:
    """``parse`` of ``/proc/<pid>/<name>`` per pid; ``unreadable`` for a pid gone or
    not ours to read."""
    out = {}
    for _, pid in pids:
        try:
            out[pid] = parse(Path(f"/proc/{pid}/{name}").read_text())
        except OSError:
            out[pid] = unreadable
    return out


def cpu_seconds(pids: Sequence[tuple[str, int]]) -> dict[int, float]:
    return per_pid(pids, "stat", lambda text: figures.cpu_ticks(text) / CLK_TCK, 0.0)


def cpu_delta(
    pids: Sequence[tuple[str, int]], before: dict[int, float], after: dict[int, float]
) -> dict[str, float]:
    per = ((s, after.get(p, 0.0) - before.get(p, 0.0)) for s, p in pids)
    return {s: round(v, 2) for s, v in figures.sum_by_service(per).items()}


def disk_write_bytes(pids: Sequence[tuple[str, int]]) -> dict[int, int]:
    """``write_bytes`` so far per pid (``figures.io_write_bytes``); 0 when unreadable."""
    return per_pid(pids, "io", figures.io_write_bytes, 0)


def disk_write_mib(
    pids: Sequence[tuple[str, int]], before: dict[int, int], after: dict[int, int]
) -> dict[str, float]:
    """MiB written to storage per service between two ``disk_write_bytes``; a worker
    that is gone at the second (read as 0) counts 0, not a negative amount."""
    per = ((s, max(0, after.get(p, 0) - before.get(p, 0)) / 2**20) for s, p in pids)
    return {s: round(v, 1) for s, v in figures.sum_by_service(per).items()}


def peak_rss_mb(pids: Sequence[tuple[str, int]]) -> dict[str, float]:
    per = []
    for service, pid in pids:
        try:
            per.append((service, figures.vm_hwm_kb(Path(f"/proc/{pid}/status").read_text())))
        except OSError:
            continue
    return {s: round(kb / 1024, 1) for s, kb in figures.max_by_service(per).items()}


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all the machine's cores so far (``figures.busy_cores``)."""
    return figures.machine_ticks(Path("/proc/stat").read_text())


def own_cpu_s() -> float:
    """CPU seconds of this process (the bench's producer and collector) so far."""
    times = os.times()
    return times.user + times.system


def load_1m() -> float:
    return round(os.getloadavg()[0], 2)


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def start_profiles(
    settings: Settings,
    pids: Sequence[tuple[str, int]],
    label: str,
    services: Sequence[str],
    out_dir: Path,
    seconds: float | None = None,
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """py-spy (if installed) on worker 0 of each of ``services`` during a push; writes
    collapsed stacks to ``out_dir`` (read them with ``python -m bench.profile_summary``)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not services or not Path(pyspy).exists():
        return []
    out = []
    seen: set[str] = set()
    for service, pid in pids:
        if service in services and service not in seen:
            seen.add(service)
            path = out_dir / f"{settings.namespace}-{label}-{service}.txt"
            cmd = [pyspy, "record", "-p", str(pid), "-r", "50", "-f", "raw", "-o", str(path)]
            if seconds:
                cmd += ["-d", str(int(seconds))]
            out.append(
                (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)
            )
    return out


def stop_profiles(profiles: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in profiles:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for proc, _ in profiles:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def report_header(args: Any) -> dict[str, Any]:
    """What every bench report starts with: commit, time, options and the machine."""
    return {
        "commit": git_commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {k: str(v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "load_1m_at_start": load_1m()},
    }


def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"report: {out}")
