"""Recovery time of a partition that moves, with and without standby replicas.

    .venv/bin/python -m bench.recovery --links 100000 --engagements 200000 --standbys 0,1

For each standby setting (``CONVMESH_STANDBY_REPLICAS``): a fresh namespace and
mesh (development mode), two workers of each measured service, identity links
and engagements loaded through it (bench/state.py's synthetic ones) until every
group has consumed them. Then, per measured service, worker 1 leaves and
worker 0 takes its partitions over, restoring their tables (from the changelog,
or from its standby copy):

* ``scale_in``: SIGTERM (what ``convmesh scale SERVICE 1`` does: Faust commits
  and leaves the group at once);
* ``kill``: after worker 1 is back and the state settled, SIGKILL (the group
  notices after ``CONVMESH_SESSION_TIMEOUT_S``).

Measured: seconds from the signal until worker 0 answers ``/ready`` with more
partitions than before (rebalanced, tables recovered). Writes the JSON report
to ``var/bench/recovery-<time>.json``; the figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.kafka_probe import Offsets, produce_all, wait_consumed
from bench.pipeline import consumer_groups, drop_namespace
from bench.procstats import report_header, write_report
from bench.state import engagements, links
from ops import mesh
from ops.procs import running_pid
from shared.runtime.settings import REPO_ROOT, Settings

POLL_S = 0.1


async def ready_state(url: str) -> tuple[bool, int]:
    """(ready, assigned partitions) of one worker; (False, -1) when it does not answer."""
    try:
        async with aiohttp.ClientSession() as session:
            timeout = aiohttp.ClientTimeout(total=2)
            async with session.get(f"{url}/ready", timeout=timeout) as resp:
                body = await resp.json()
                return resp.status == 200, int(body.get("assigned_partitions", 0))
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        return False, -1


async def time_takeover(settings: Settings, service: str, sig: int, timeout_s: float) -> dict:
    """Signal worker 1 of ``service``; seconds until worker 0 is ready with its partitions."""
    url = mesh.worker_url(settings, service, 0)
    _, before = await ready_state(url)
    pid = running_pid(mesh.worker_pid_path(settings, service, 1))
    if pid is None:
        raise RuntimeError(f"{service} worker 1 is not running")
    started = time.monotonic()
    os.kill(pid, sig)
    left_ready_at = None
    while time.monotonic() - started < timeout_s:
        ready, assigned = await ready_state(url)
        now = time.monotonic() - started
        if not ready and left_ready_at is None:
            left_ready_at = now
        if ready and assigned > before:
            mesh.worker_pid_path(settings, service, 1).unlink(missing_ok=True)
            return {
                "seconds": round(now, 2),
                "rebalance_seen_after_s": left_ready_at and round(left_ready_at, 2),
                "partitions_before": before,
                "partitions_after": assigned,
            }
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"{service} worker 0 did not take over within {timeout_s} s")


async def load_state(settings: Settings, args: argparse.Namespace) -> float:
    now_ms = int(time.time() * 1000)
    records = [
        (settings.topic_name(t), k, v)
        for t, k, v in [
            *links(0, args.links, args.users, now_ms),
            *engagements(0, args.engagements, args.users, now_ms),
        ]
    ]
    started = time.monotonic()
    await produce_all(settings.bootstrap, records)
    await settle(settings, args.stall_s)
    return round(time.monotonic() - started, 1)


async def settle(settings: Settings, stall_s: float) -> None:
    probe = Offsets(settings.bootstrap, settings.namespace)
    await probe.start()
    try:
        await wait_consumed(probe, consumer_groups(settings), stall_s)
    finally:
        await probe.stop()


def measure(standby: int, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    namespace = f"recovery-{uuid.uuid4().hex[:8]}"
    os.environ.update(
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DEV_MODE="true",
        CONVMESH_DATA_DIR=str(args.out_dir / namespace),
        CONVMESH_STANDBY_REPLICAS=str(standby),
    )
    settings = Settings.from_env()
    out: dict[str, Any] = {"standby_replicas": standby, "namespace": namespace, "services": {}}
    mesh.up(settings, workers=1)
    try:
        for service in args.services:
            mesh.scale(settings, service, 2)
        out["load_s"] = asyncio.run(load_state(settings, args))
        time.sleep(args.settle_s)  # standby copies follow the changelogs after the load
        say(f"standby {standby}: state loaded in {out['load_s']} s")
        for service in args.services:
            took = {}
            took["scale_in"] = asyncio.run(
                time_takeover(settings, service, signal.SIGTERM, args.timeout_s)
            )
            mesh.scale(settings, service, 2)
            asyncio.run(settle(settings, args.stall_s))
            time.sleep(args.settle_s)
            took["kill"] = asyncio.run(
                time_takeover(settings, service, signal.SIGKILL, args.timeout_s)
            )
            out["services"][service] = took
            say(
                f"standby {standby}: {service}: scale-in {took['scale_in']['seconds']} s, "
                f"kill -9 {took['kill']['seconds']} s"
            )
    finally:
        mesh.down(settings, purge=True)
        drop_namespace(settings, say)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=100_000)
    parser.add_argument("--engagements", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--standbys", default="0,1", help="standby settings to compare")
    parser.add_argument("--services", default="identity_match,attribute")
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--stall-s", type=float, default=120.0)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "var" / "bench")
    args = parser.parse_args(argv)
    args.services = args.services.split(",")
    report = report_header(args)
    report["runs"] = [measure(int(s), args, print) for s in args.standbys.split(",")]
    write_report(report, args.out_dir / f"recovery-{time.strftime('%Y%m%dT%H%M%S')}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
