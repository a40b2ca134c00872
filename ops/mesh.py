"""Start, stop and inspect the five services as local background workers.

Layout under the data dir (everything `convmesh down --purge` deletes):

    run/<service>-<worker>.pid     pid files of the workers
    run/broker.started-by-up       present when `up` started the local broker
    logs/<service>-<worker>.log    each worker's JSON log
    services/<service>/worker-N/   each worker's RocksDB folder
    broker/                        the local broker's config, data and logs
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import structlog

from ops import broker
from ops.errors import MeshError
from ops.procs import (
    DATA_DIR_MARKER,
    claim_data_dir,
    log_tail,
    running_pid,
    spawn_detached,
    stop_pids,
)
from shared.kafka.admin import ApplyReport, apply_topics
from shared.runtime.settings import REPO_ROOT, SERVICES, Settings

MARKER = DATA_DIR_MARKER


def log() -> structlog.typing.FilteringBoundLogger:
    """A logger made per call: it follows the logging configuration of the moment
    (a module-level logger would keep the output stream of its first use)."""
    return structlog.get_logger(component="mesh")


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    name: str
    worker: int
    pid: int | None
    url: str
    ready: bool
    #: running, stopped, or crashed (pid file left by a process that is gone)
    state: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def worker_pid_path(settings: Settings, service: str, worker: int) -> Path:
    return run_dir(settings) / f"{service}-{worker}.pid"


def worker_log_path(settings: Settings, service: str, worker: int) -> Path:
    return settings.data_dir / "logs" / f"{service}-{worker}.log"


def worker_url(settings: Settings, service: str, worker: int) -> str:
    return f"http://{settings.web_host}:{settings.service_base_port(service) + worker}"


def _broker_flag(settings: Settings) -> Path:
    return run_dir(settings) / "broker.started-by-up"


def known_workers(settings: Settings) -> list[tuple[str, int]]:
    """Every (service, worker) with a pid file, plus worker 0 of each service."""
    found = {(s, 0) for s in SERVICES}
    for path in run_dir(settings).glob("*.pid"):
        service, _, worker = path.stem.rpartition("-")
        if service in SERVICES and worker.isdigit():
            found.add((service, int(worker)))
    return sorted(found, key=lambda sw: (SERVICES.index(sw[0]), sw[1]))


# ------------------------------------------------------------------- readiness
async def _ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/ready", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def _ready_many(urls: list[str]) -> list[bool]:
    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(_ready(session, u) for u in urls)))


def status(settings: Settings) -> list[WorkerStatus]:
    workers = known_workers(settings)
    urls = [worker_url(settings, s, w) for s, w in workers]
    pids = [running_pid(worker_pid_path(settings, s, w)) for s, w in workers]
    ready = asyncio.run(_ready_many(urls))
    result = []
    for (service, worker), url, pid, ok in zip(workers, urls, pids, ready, strict=True):
        if pid is not None:
            state = "running"
        elif worker_pid_path(settings, service, worker).exists():
            state = "crashed"
        else:
            state = "stopped"
        result.append(WorkerStatus(service, worker, pid, url, ok and pid is not None, state))
    return result


# -------------------------------------------------------------------------- up
def _ensure_broker(settings: Settings) -> None:
    if settings.external_broker or running_pid(broker.pid_path(settings)) is not None:
        broker.start(settings)  # checks the cluster answers; starts nothing
        return
    if broker.reachable(settings):
        log().warning(
            "a broker convmesh did not start answers; using it", bootstrap=settings.bootstrap
        )
        return
    broker.start(settings)
    _broker_flag(settings).parent.mkdir(parents=True, exist_ok=True)
    _broker_flag(settings).touch()


def _worker_env(settings: Settings, service: str, worker: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CONVMESH_WORKER=str(worker),
        CONVMESH_DATA_DIR=str(settings.data_dir),
        CONVMESH_WEB_PORT=str(settings.service_base_port(service) + worker),
        CONVMESH_WEB_PORT_BASE=str(settings.web_port_base),
        CONVMESH_NAMESPACE=settings.namespace,
        KAFKA_BOOTSTRAP=settings.bootstrap,
        PYTHONUNBUFFERED="1",
    )
    return env


def _check_ports_free(settings: Settings, workers: list[tuple[str, int]]) -> None:
    """Fail before starting anything when a web port is taken by someone else."""
    taken = [
        f"{s}-{w} ({settings.service_base_port(s) + w})"
        for s, w in workers
        if broker.port_open(f"{settings.web_host}:{settings.service_base_port(s) + w}", 0.5)
    ]
    if taken:
        raise MeshError(
            f"web ports taken by other processes: {', '.join(taken)}; "
            "set CONVMESH_WEB_PORT_BASE to run on other ports"
        )


def _start_worker(settings: Settings, service: str, worker: int) -> int:
    port = settings.service_base_port(service) + worker
    pid = spawn_detached(
        [sys.executable, "-m", f"services.{service}"],
        pid_path=worker_pid_path(settings, service, worker),
        log_path=worker_log_path(settings, service, worker),
        env=_worker_env(settings, service, worker),
        cwd=REPO_ROOT,
    )
    log().info("worker started", service=service, worker=worker, pid=pid, port=port)
    return pid


def up(settings: Settings, workers: int = 1, timeout_s: float = 180.0) -> ApplyReport:
    """Broker (if needed), topics, then every worker not already running; wait ready."""
    if not 1 <= workers <= 10:
        # Worker N listens on its service's port + N; services are 10 ports apart.
        raise MeshError("--workers must be between 1 and 10")
    claim_data_dir(settings.data_dir)
    _ensure_broker(settings)
    report = asyncio.run(apply_topics(settings))
    wanted = [(s, w) for s in SERVICES for w in range(workers)]
    missing = [(s, w) for s, w in wanted if running_pid(worker_pid_path(settings, s, w)) is None]
    _check_ports_free(settings, missing)
    for service, worker in missing:
        _start_worker(settings, service, worker)
    _wait_ready(settings, wanted, timeout_s)
    return report


def _wait_ready(settings: Settings, wanted: list[tuple[str, int]], timeout_s: float) -> None:
    started = time.monotonic()
    pending = list(wanted)
    while pending:
        for service, worker in pending:
            if running_pid(worker_pid_path(settings, service, worker)) is None:
                path = worker_log_path(settings, service, worker)
                raise MeshError(
                    f"{service}-{worker} exited while starting; end of {path}:\n{log_tail(path)}"
                )
        ready = asyncio.run(_ready_many([worker_url(settings, s, w) for s, w in pending]))
        pending = [sw for sw, ok in zip(pending, ready, strict=True) if not ok]
        if not pending:
            break
        if time.monotonic() - started > timeout_s:
            names = ", ".join(f"{s}-{w}" for s, w in pending)
            raise MeshError(
                f"not ready after {timeout_s:.0f} s: {names} (see {settings.data_dir}/logs)"
            )
        time.sleep(0.5)
    log().info("mesh ready", workers=len(wanted), seconds=round(time.monotonic() - started, 1))


# ----------------------------------------------------------------------- scale
def scale(
    settings: Settings, service: str, workers: int, timeout_s: float = 180.0
) -> dict[str, object]:
    """Run exactly ``workers`` workers of one service while data flows.

    Workers 0..N-1 are started if they do not run; workers N and above are
    stopped gracefully (SIGTERM: Faust commits and leaves the group), so the
    consumer group rebalances and the partitions' tables are recovered from
    their changelogs by the workers that take them over.
    """
    if service not in SERVICES:
        raise MeshError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    if not 1 <= workers <= 10:
        raise MeshError("the number of workers must be between 1 and 10")
    claim_data_dir(settings.data_dir)
    running = [w for s, w in known_workers(settings) if s == service]
    surplus = [w for w in running if w >= workers]
    stopped, killed = stop_workers(settings, service, surplus, timeout_s)
    wanted = [(service, w) for w in range(workers)]
    missing = [(s, w) for s, w in wanted if running_pid(worker_pid_path(settings, s, w)) is None]
    _check_ports_free(settings, missing)
    for _, worker in missing:
        _start_worker(settings, service, worker)
    _wait_ready(settings, wanted, timeout_s)
    log().info(
        "service scaled",
        service=service,
        workers=workers,
        started=len(missing),
        stopped=len(stopped),
        killed=len(killed),
    )
    return {
        "service": service,
        "workers": workers,
        "started": [w for _, w in missing],
        "stopped": stopped,
        "killed_after_timeout": len(killed),
    }


def stop_workers(
    settings: Settings, service: str, workers: list[int], timeout_s: float
) -> tuple[list[int], list[int]]:
    """Stop these workers of ``service`` gracefully (SIGTERM: Faust commits and leaves
    the group; SIGKILL after ``timeout_s``) and forget their pid files. Returns the
    workers that were running and the pids that needed SIGKILL."""
    pids = {w: running_pid(worker_pid_path(settings, service, w)) for w in workers}
    alive = {w: pid for w, pid in pids.items() if pid is not None}
    killed = stop_pids(list(alive.values()), timeout_s) if alive else []
    for worker in workers:
        worker_pid_path(settings, service, worker).unlink(missing_ok=True)
    return list(alive), killed


# ------------------------------------------------------------------------ down
def down(settings: Settings, purge: bool = False, timeout_s: float = 30.0) -> dict[str, object]:
    """Stop the workers, then the broker if `up` started it; --purge deletes the data dir."""
    pid_files = sorted(run_dir(settings).glob("*.pid"))
    pids = {p: running_pid(p) for p in pid_files}
    alive = [pid for pid in pids.values() if pid is not None]
    killed = stop_pids(alive, timeout_s) if alive else []
    for path in pid_files:
        path.unlink(missing_ok=True)
    broker_stopped = False
    if _broker_flag(settings).exists() or purge:
        # A purge deletes the broker's data: it must not run on top of it.
        broker_stopped = broker.stop(settings, timeout_s)
        _broker_flag(settings).unlink(missing_ok=True)
    if purge:
        _purge(settings.data_dir)
    log().info("mesh down", workers=len(alive), killed=len(killed), purged=purge)
    return {
        "workers_stopped": len(alive),
        "killed": len(killed),
        "broker_stopped": broker_stopped,
        "purged": purge,
    }


def _purge(data_dir: Path) -> None:
    if not data_dir.exists():
        return
    if not (data_dir / MARKER).exists() and any(data_dir.iterdir()):
        raise MeshError(f"refusing to delete {data_dir}: it is not a convmesh data dir")
    shutil.rmtree(data_dir)
