"""`convmesh send` on the real broker: to a live ingest worker's API, and to conversions.raw."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shared.kafka.topic_io import read_all
from shared.runtime.settings import BASE_WEB_PORTS, DEFAULT_WEB_PORT_BASE, REPO_ROOT
from tests.integration.helpers import convmesh, convmesh_json, kafka, topics_env

pytestmark = pytest.mark.integration

ACCOUNT = "549755885175"
H = "b" * 64
START_TIMEOUT_S = 90.0


def event(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": int(time.time()) - 60,
        "event_id": f"send-{n}",
        "user_data": {"em": [H]},
        **overrides,
    }


@pytest.fixture
def env(bootstrap: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    return topics_env(bootstrap, namespace, tmp_path / "data", 8700)


def ingest_url(env: dict[str, str]) -> str:
    port = BASE_WEB_PORTS["ingest"] - DEFAULT_WEB_PORT_BASE + int(env["CONVMESH_WEB_PORT_BASE"])
    return f"http://127.0.0.1:{port}"


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the ingest worker exited during start-up"
            try:
                async with session.get(f"{url}/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)  # polling interval, not a wait for a condition
    raise AssertionError("the ingest worker was not ready in time")


@pytest.fixture
def ingest(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with (tmp_path / "ingest.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.ingest"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        asyncio.run(_wait_ready(ingest_url(env), proc))
        yield ingest_url(env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raw_events(env: dict[str, str]) -> list[dict[str, Any]]:
    topic = f"{env['CONVMESH_NAMESPACE']}.conversions.raw"
    return [
        orjson.loads(r.value)
        for r in asyncio.run(read_all(kafka(env["KAFKA_BOOTSTRAP"]), topic))
        if r.value
    ]


def test_send_streams_a_file_to_the_api_in_batches_and_sums_up_rejects(
    env: dict[str, str], ingest: str, tmp_path: Path
) -> None:
    token = str(
        convmesh_json("tokens", "create", "--ad-account", ACCOUNT, "--json", env=env)["token"]
    )
    path = tmp_path / "events.ndjson"
    with path.open("wb") as out:
        for n in range(2100):
            out.write(orjson.dumps(event(n)) + b"\n")
        for n in range(3):  # event_time in milliseconds: rejected
            out.write(orjson.dumps(event(5000 + n, event_time=int(time.time() * 1000))) + b"\n")
    done = convmesh(
        "send",
        str(path),
        "--url",
        ingest,
        "--token",
        token,
        "--ad-account",
        ACCOUNT,
        "--no-progress",
        env=env,
    )
    assert done.returncode == 1, done.stderr  # some events were rejected
    assert "sent 2103, accepted 2100, rejected 3" in done.stdout
    assert "       3  " in done.stdout  # the per-reason line
    ids = {e["event"]["event_id"] for e in raw_events(env)}
    assert {f"send-{n}" for n in range(2100)} <= ids


def test_send_with_topic_produces_envelopes_to_conversions_raw(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["event_name", "action_source", "event_time", "event_id", "em", "value", "currency"]
        )
        for n in range(1500):
            writer.writerow(
                ["checkout", "web", int(time.time()) - 60, f"csv-{n}", H, "1.50", "USD"]
            )
    done = convmesh("send", str(path), "--topic", "--ad-account", ACCOUNT, "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    assert "sent 1500, accepted 1500, rejected 0" in done.stdout
    envelopes = raw_events(env)
    assert len(envelopes) == 1500
    first = envelopes[0]
    assert first["ad_account_id"] == ACCOUNT and first["source"] == "batch"
    assert first["event"]["user_data"] == {"em": [H]}
    assert first["event"]["custom_data"] == {"value": "1.50", "currency": "USD"}
