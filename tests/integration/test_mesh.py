"""`convmesh up` → five ready services → restart of a killed worker → `down`.

Runs the CLI as a subprocess, as a user would, with its own data dir, its own
namespace and web ports away from anyone else's mesh on 6100-6140.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from shared.runtime.settings import SERVICES
from tests.integration.helpers import (
    cli_env,
    convmesh,
    convmesh_json,
    free_web_port_base,
    processes_with_env,
)


def test_up_status_restart_down(bootstrap: str, namespace: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "mesh"
    base = int(os.environ.get("CONVMESH_TEST_WEB_PORT_BASE") or free_web_port_base(7100))
    env = cli_env(
        KAFKA_BOOTSTRAP=bootstrap,
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DATA_DIR=str(data_dir),
        CONVMESH_WEB_PORT_BASE=str(base),
    )
    try:
        started = time.monotonic()
        up = convmesh("up", env=env, timeout=240)
        up_seconds = time.monotonic() - started
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        assert up_seconds < 90, f"five services took {up_seconds:.0f} s to be ready"

        status = convmesh_json("status", "--json", env=env)
        assert status["broker"]["state"] == "external" and status["broker"]["reachable"]
        services = status["services"]
        assert [s["name"] for s in services] == list(SERVICES)
        assert all(s["state"] == "running" and s["ready"] for s in services), services
        assert [s["url"] for s in services] == [
            f"http://127.0.0.1:{base + 10 * i}" for i in range(len(SERVICES))
        ]
        for service in SERVICES:
            assert (data_dir / "logs" / f"{service}-0.log").stat().st_size > 0
        pids = {s["name"]: s["pid"] for s in services}

        # A second `up` starts nothing that already runs.
        assert convmesh("up", env=env, timeout=240).returncode == 0
        again = convmesh_json("status", "--json", env=env)
        assert {s["name"]: s["pid"] for s in again["services"]} == pids

        # A killed worker shows as crashed; `up` restarts only that one.
        os.kill(pids["dedupe"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # status exits 3 while a service is not ready
            crashed = convmesh_json("status", "--json", env=env, ok_codes=(3,))["services"][1]
            if crashed["state"] == "crashed":
                break
            time.sleep(0.2)
        assert crashed["state"] == "crashed" and not crashed["ready"]
        assert convmesh("up", env=env, timeout=240).returncode == 0
        after = {s["name"]: s for s in convmesh_json("status", "--json", env=env)["services"]}
        assert after["dedupe"]["ready"] and after["dedupe"]["pid"] != pids["dedupe"]
        assert {n: s["pid"] for n, s in after.items() if n != "dedupe"} == {
            n: p for n, p in pids.items() if n != "dedupe"
        }
    finally:
        down = convmesh("down", "--purge", env=env, timeout=120)

    assert down.returncode == 0, down.stderr
    assert "stopped 5 worker(s)" in down.stdout
    assert processes_with_env("CONVMESH_DATA_DIR", str(data_dir)) == []
    assert not data_dir.exists()
