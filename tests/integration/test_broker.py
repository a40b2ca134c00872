"""`convmesh broker start|status|stop` on its own ports and data dir (slow: one test)."""

from __future__ import annotations

import json
from pathlib import Path

from ops.broker import port_open, reachable
from shared.runtime.settings import Settings
from tests.integration.helpers import cli_env, convmesh, free_port, processes_with_env


def test_broker_start_status_stop(tmp_path: Path) -> None:
    port, ctrl = free_port(), free_port()
    data_dir = tmp_path / "data"
    env = cli_env(
        CONVMESH_BROKER_PORT=str(port),
        CONVMESH_CONTROLLER_PORT=str(ctrl),
        CONVMESH_DATA_DIR=str(data_dir),
    )
    env.pop("KAFKA_BOOTSTRAP", None)  # a local broker, not an external one
    bootstrap = f"127.0.0.1:{port}"
    try:
        start = convmesh("broker", "start", "--json", env=env, timeout=180)
        assert start.returncode == 0, start.stderr
        started = json.loads(start.stdout)
        assert started["state"] == "running" and started["reachable"]
        assert started["bootstrap"] == bootstrap
        assert reachable(Settings(bootstrap=bootstrap))
        props = (data_dir / "broker" / "server.properties").read_text()
        assert f"controller.quorum.voters=1@127.0.0.1:{ctrl}" in props
        assert "auto.create.topics.enable=false" in props
        assert (data_dir / "broker" / "data" / "meta.properties").exists()
        assert "Kafka Server started" in (data_dir / "broker" / "logs" / "server.log").read_text()

        # Starting again is a no-op on the same process.
        again = json.loads(convmesh("broker", "start", "--json", env=env).stdout)
        assert again["pid"] == started["pid"]
        status = convmesh("broker", "status", env=env)
        assert status.returncode == 0 and f"pid={started['pid']}" in status.stdout
    finally:
        stop = convmesh("broker", "stop", env=env, timeout=120)

    assert stop.returncode == 0 and "broker stopped" in stop.stdout
    assert not port_open(bootstrap)
    assert processes_with_env("CONVMESH_DATA_DIR", str(data_dir)) == []
    stopped = convmesh("broker", "status", "--json", env=env)
    assert stopped.returncode == 3
    assert json.loads(stopped.stdout)["state"] == "stopped"
