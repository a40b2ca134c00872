"""Running the `convmesh` CLI as a user would, from integration tests."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.contract.report_deltas import sends_of_result
from shared.runtime.settings import BASE_WEB_PORTS, REPO_ROOT, Settings


def cli_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONVMESH_WEB_PORT"}
    env.update(overrides)
    return env


def run_module(
    module: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m MODULE ARGS` from the repository's root in a subprocess, no stdin;
    stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def convmesh(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `convmesh ARGS` in a subprocess; stdout and stderr captured as text."""
    return run_module("ops.cli", *args, env=env, timeout=timeout)


def convmesh_json(
    *args: str, env: dict[str, str], timeout: float = 300, ok_codes: tuple[int, ...] = (0,)
) -> Any:
    done = convmesh(*args, env=env, timeout=timeout)
    command = " ".join(args)
    assert done.returncode in ok_codes, f"convmesh {command}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_web_port_base(start: int = 7100, workers: int = 1) -> int:
    """A port base whose five services' ports (base + offset + worker) are all free.

    Candidates are tried in random order: several test runs on one machine (other
    engineers, CI) would otherwise all race for the same first free base.
    """
    offsets = [p - 6100 for p in BASE_WEB_PORTS.values()]
    candidates = list(range(start, start + 2000, 100))
    random.shuffle(candidates)
    for base in candidates:
        if all(port_free(base + o + w) for o in offsets for w in range(workers)):
            return base
    raise RuntimeError("no free web port base found")


def processes_with_env(key: str, value: str) -> list[int]:
    """Pids of live processes whose environment has key=value (ours to check)."""
    found = []
    needle = f"{key}={value}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].startswith("Z"):
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kafka(bootstrap: str) -> Settings:
    """Client settings of the test broker, for shared.kafka.topic_io's functions."""
    return Settings(bootstrap=bootstrap)


def topics_env(bootstrap: str, namespace: str, data_dir: Path, start_port: int) -> dict[str, str]:
    """A development-mode CLI environment of its own namespace, data dir and free
    port base, with the registry's topics applied."""
    env = cli_env(
        KAFKA_BOOTSTRAP=bootstrap,
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DATA_DIR=str(data_dir),
        CONVMESH_WEB_PORT_BASE=os.environ.get("CONVMESH_TEST_WEB_PORT_BASE")
        or str(free_web_port_base(start_port)),
        CONVMESH_DEV_MODE="true",
    )
    applied = convmesh("topics", "apply", env=env, timeout=120)
    assert applied.returncode == 0, applied.stderr
    return env


def as_published(namespace: str, records: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    """What attribute's publisher sends aggregate for these conversions.attributed
    records (in order, each newer than the last of its key): report deltas and facts.

    For the tests that run an aggregate worker alone.
    """
    last: dict[str, dict[str, Any]] = {}
    out = []
    for record in records:
        key = record["conversion_key"]
        for send in sends_of_result(last.get(key), record):
            out.append((f"{namespace}.{send.topic}", send.key.encode(), orjson.dumps(send.value)))
        last[key] = record
    return out


async def group_lags(bootstrap: str, namespace: str, services: list[str]) -> dict[str, int]:
    """'service topic[partition]' -> records not yet committed by the service's group,
    for every partition that has any (what a stall leaves behind)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    lags: dict[str, int] = {}
    try:
        for service in services:
            group = Settings(bootstrap=bootstrap, namespace=namespace, service=service)
            committed = await admin.list_consumer_group_offsets(group.app_id)
            ends = await consumer.end_offsets(list(committed)) if committed else {}
            for tp, meta in sorted(committed.items()):
                behind = ends[tp] - meta.offset
                if behind > 0:
                    lags[f"{service} {tp.topic}[{tp.partition}]"] = behind
    finally:
        await consumer.stop()
        await admin.close()
    return lags


def log_digest(data_dir: Path, last: int = 6) -> list[str]:
    """Per worker log of a mesh: its size, its last line's time, how often each warning
    or error was logged, the last errors and the last lines (structlog JSON; other
    lines as they are)."""
    lines: list[str] = []
    for path in sorted((data_dir / "logs").glob("*.log")):
        total, stamp = 0, ""
        recent: list[str] = []
        alarms: Counter[str] = Counter()
        errors: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            total += 1
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = {"event": line[:240], "level": "raw"}
            if not isinstance(record, dict):
                continue
            stamp = str(record.get("timestamp", stamp))
            recent = [*recent[-2:], f"{stamp} {str(record.get('event'))[:160]}"]
            level = str(record.get("level", "")).lower()
            if level in {"warning", "error", "critical", "raw"}:
                event = str(record.get("event"))[:240]
                alarms[f"{level}: {event[:80]}"] += 1
                if level != "warning":
                    errors.append(f"{stamp} {event}")
        lines.append(f"{path.name}: {total} lines, last at {stamp}")
        lines.extend(f"    {count} x {alarm}" for alarm, count in alarms.most_common(8))
        lines.extend(f"    last error: {error}" for error in errors[-last:])
        lines.extend(f"    tail: {line}" for line in recent)
    return lines


def machine_digest(data_dir: Path, last: int = 8) -> list[str]:
    """What the machine says beside a stalled mesh: free disk, load, and the last
    warnings and errors of the broker scripts/run-tests.sh started (if it did)."""
    disk = shutil.disk_usage(data_dir)
    lines = [
        f"disk free {disk.free / 2**30:.1f} of {disk.total / 2**30:.1f} GiB; "
        f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    ]
    log = os.environ.get("CONVMESH_TEST_BROKER_LOG")
    if log and Path(log).exists():
        alarms = [
            line[:300]
            for line in Path(log).read_text(errors="replace").splitlines()
            if " WARN " in line or " ERROR " in line
        ]
        lines.append(f"broker log {log}: {len(alarms)} warnings and errors")
        lines.extend(f"    {alarm}" for alarm in alarms[-last:])
    return lines


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """A plain topic of the test broker (one replica), outside topics.yaml."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()
