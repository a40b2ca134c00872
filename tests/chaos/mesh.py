"""A mesh of the chaos suite and the faults it can inject, through the CLI as an operator would.

The mesh has its own broker (own ports via CONVMESH_BROKER_PORT and
CONVMESH_CONTROLLER_PORT, own data dir): stopping it hurts nobody else's tests.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from shared.runtime.settings import SERVICES
from tests.integration.helpers import (
    cli_env,
    convmesh,
    convmesh_json,
    free_port,
    free_web_port_base,
)

WORKERS = int(os.environ.get("CONVMESH_CHAOS_WORKERS", "2"))  # workers per service
READY_TIMEOUT_S = 240.0
PROBE_AD = "777000777"  # ad account of the API probes, kept out of the workload's comparison


@dataclass
class ChaosMesh:
    env: dict[str, str]
    data_dir: Path
    workers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, WORKERS))
    log: list[str] = field(default_factory=list)
    probe_token: str = ""
    #: event_ids the API answered 200 for: each must reach conversions.raw
    probes_accepted: list[str] = field(default_factory=list)
    #: HTTP statuses the API answered while the broker was down
    outage_statuses: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, data_dir: Path) -> ChaosMesh:
        env = cli_env(
            CONVMESH_NAMESPACE=f"c{uuid.uuid4().hex[:8]}",
            CONVMESH_DATA_DIR=str(data_dir),
            CONVMESH_BROKER_PORT=str(free_port()),
            CONVMESH_CONTROLLER_PORT=str(free_port()),
            CONVMESH_WEB_PORT_BASE=str(
                os.environ.get("CONVMESH_CHAOS_WEB_PORT_BASE")
                or free_web_port_base(8400, workers=WORKERS + 1)
            ),
        )
        env.pop("KAFKA_BOOTSTRAP", None)  # the suite's own broker, not the shared one
        return cls(env=env, data_dir=data_dir)

    # ------------------------------------------------------------------ basics
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.env['CONVMESH_BROKER_PORT']}"

    @property
    def namespace(self) -> str:
        return self.env["CONVMESH_NAMESPACE"]

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def cli(self, *args: str, timeout: float = READY_TIMEOUT_S) -> str:
        done = convmesh(*args, env=self.env, timeout=timeout)
        assert done.returncode == 0, f"convmesh {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def up(self) -> None:
        for _ in range(3):
            done = convmesh("up", "--workers", str(WORKERS), env=self.env, timeout=READY_TIMEOUT_S)
            if "web ports taken" not in done.stderr:
                break
            # Another test run took a port between the choice and the start: choose again.
            base = free_web_port_base(8400, workers=WORKERS + 1)
            self.env["CONVMESH_WEB_PORT_BASE"] = str(base)
        assert done.returncode == 0, f"convmesh up:\n{done.stdout}\n{done.stderr}"
        token = convmesh_json("tokens", "create", "--ad-account", PROBE_AD, "--json", env=self.env)
        self.probe_token = token["token"]

    def purge(self) -> None:
        convmesh("down", "--purge", env=self.env, timeout=120)

    def services(self) -> list[dict[str, Any]]:
        doc = convmesh_json("status", "--json", env=self.env, ok_codes=(0, 3))
        return [s for s in doc["services"] if s["pid"]]

    def restore(self, service: str) -> None:
        """Start the workers of ``service`` that are not running (as many as it should have)."""
        self.cli("scale", service, str(self.workers[service]))

    def wait_all_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if convmesh("status", env=self.env, timeout=60).returncode == 0:
                return
            time.sleep(1)
        raise AssertionError(f"the mesh was not ready {timeout_s:.0f} s after the fault")

    # ------------------------------------------------------------------ faults
    def kill_one(self, rng: random.Random) -> None:
        victim = rng.choice(self.services())
        os.kill(victim["pid"], signal.SIGKILL)
        self.log.append(f"kill -9 {victim['name']}-{victim['worker']}")
        self.restore(victim["name"])

    def kill_all_of_one_service(self, rng: random.Random) -> None:
        service = rng.choice([s for s in SERVICES if self.workers[s] >= 2] or list(SERVICES))
        pids = [s["pid"] for s in self.services() if s["name"] == service]
        for pid in pids:  # together: no worker of the service outlives another
            os.kill(pid, signal.SIGKILL)
        self.log.append(f"kill -9 all {len(pids)} workers of {service}")
        self.restore(service)

    def kill_every_stateful_worker(self, rng: random.Random) -> None:
        """Every worker of dedupe, identity_match, attribute and aggregate at once."""
        victims = [s for s in self.services() if s["name"] != "ingest"]
        for victim in victims:
            os.kill(victim["pid"], signal.SIGKILL)
        self.log.append(f"kill -9 all {len(victims)} stateful workers")
        for service in SERVICES[1:]:
            self.restore(service)

    def restart_broker(self, rng: random.Random) -> None:
        before = {(s["name"], s["worker"]): s["pid"] for s in self.services()}
        self.cli("broker", "stop", "--data-dir", str(self.data_dir))
        outage = time.monotonic()
        asyncio.run(self.probe_api(rounds=rng.randint(1, 2)))
        self.cli("broker", "start", "--data-dir", str(self.data_dir))
        self.wait_all_ready()
        after = {(s["name"], s["worker"]): s["pid"] for s in self.services()}
        # Services reconnect by themselves: none of them died and was restarted.
        assert after == before, f"workers died during the broker outage: {before} -> {after}"
        asyncio.run(self.probe_until_accepted())
        self.log.append(f"broker stopped and started ({time.monotonic() - outage:.0f} s down)")

    def damage_store(self, rng: random.Random) -> None:
        """kill -9 a stateful worker, damage (or delete) one of its RocksDB stores, restart.

        The worker must set the store aside (log ``state_rebuilt_from_changelog``)
        or, for a deleted one, just recover it from the changelog.
        """
        stateful = [s for s in self.services() if s["name"] != "ingest"]
        victim = rng.choice(stateful)
        stores = sorted(
            (self.data_dir / "services" / victim["name"] / f"worker-{victim['worker']}").glob(
                "v*/tables/*.db"
            )
        )
        os.kill(victim["pid"], signal.SIGKILL)
        wait_gone(victim["pid"])
        if not stores:
            self.log.append(f"kill -9 {victim['name']}-{victim['worker']} (no store yet)")
        else:
            store = rng.choice(stores)
            how = rng.choice(["truncate_sst", "remove_current", "delete"])
            ssts = sorted(store.glob("*.sst"))
            if how == "truncate_sst" and ssts:
                with ssts[0].open("r+b") as f:
                    f.truncate(100)
            elif how == "remove_current" and (store / "CURRENT").exists():
                (store / "CURRENT").unlink()
            else:
                how = "delete"
                shutil.rmtree(store)
            self.log.append(f"kill -9 {victim['name']}-{victim['worker']}, {how} {store.name}")
        self.restore(victim["name"])

    def scale_out(self, rng: random.Random) -> None:
        service = rng.choice([s for s in SERVICES if self.workers[s] <= WORKERS])
        self.workers[service] += 1
        self.cli("scale", service, str(self.workers[service]))
        self.log.append(f"scale {service} to {self.workers[service]}")

    def scale_in(self, rng: random.Random) -> None:
        scaled_out = [s for s in SERVICES if self.workers[s] > WORKERS]
        service = rng.choice(scaled_out or [s for s in SERVICES if self.workers[s] > 1])
        self.workers[service] -= 1
        self.cli("scale", service, str(self.workers[service]))
        self.log.append(f"scale {service} to {self.workers[service]}")

    # ------------------------------------------------------------- API probes
    def ingest_urls(self) -> list[str]:
        return [s["url"] for s in self.services() if s["name"] == "ingest"]

    async def post_probe(self, session: aiohttp.ClientSession, url: str) -> int:
        event_id = f"probe-{uuid.uuid4().hex}"
        body = {
            "data": [
                {
                    "event_name": "checkout",
                    "action_source": "web",
                    "event_time": int(time.time()) - 60,
                    "event_id": event_id,
                    "user_data": {"em": ["a" * 64]},
                }
            ]
        }
        async with session.post(
            f"{url}/v5/ad_accounts/{PROBE_AD}/events",
            data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {self.probe_token}"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            if resp.status == 200:
                self.probes_accepted.append(event_id)
            return resp.status

    async def probe_api(self, rounds: int) -> None:
        """While the broker is down: the API answers 503, never 500 (nor 200)."""
        async with aiohttp.ClientSession() as session:
            for _ in range(rounds):
                # Every ingest worker at once: each waits the publish timeout (10 s).
                urls = self.ingest_urls()
                statuses = await asyncio.gather(*(self.post_probe(session, u) for u in urls))
                self.outage_statuses.extend(statuses)

    async def probe_until_accepted(self, timeout_s: float = 120.0) -> None:
        """Once the broker is back, the API takes events again."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                statuses = [await self.post_probe(session, url) for url in self.ingest_urls()]
                if set(statuses) == {200}:
                    return
                await asyncio.sleep(1)
        raise AssertionError("the API did not answer 200 again after the broker restart")


def wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    """Until the killed process is gone (its RocksDB locks released)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive {timeout_s} s after kill -9")


FAULTS = {
    "kill": ChaosMesh.kill_one,
    "kill_all": ChaosMesh.kill_all_of_one_service,
    "kill_stateful": ChaosMesh.kill_every_stateful_worker,
    "broker_restart": ChaosMesh.restart_broker,
    "scale_out": ChaosMesh.scale_out,
    "scale_in": ChaosMesh.scale_in,
    "damage_store": ChaosMesh.damage_store,
}


def schedule(spec: str, rng: random.Random) -> list[str]:
    """``kill,kill_all,...`` as given, or ``random:N``: N faults, mostly kills, in random order.

    A scale-in only follows a scale-out, so each service keeps at least its workers.
    """
    if not spec.startswith("random:"):
        names = [name.strip() for name in spec.split(",") if name.strip()]
        unknown = set(names) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}; known: {sorted(FAULTS)}"
        return names
    faults: list[str] = []
    scaled = 0
    for _ in range(int(spec.removeprefix("random:"))):
        kind = rng.choices(
            [
                "kill",
                "kill_all",
                "kill_stateful",
                "broker_restart",
                "scale_out",
                "scale_in",
                "damage_store",
            ],
            [8, 3, 1, 1, 1, 1, 1],
        )[0]
        if kind == "scale_in" and scaled == 0:
            kind = "kill"
        if kind == "scale_out" and scaled >= len(SERVICES):
            kind = "kill_all"
        scaled += {"scale_out": 1, "scale_in": -1}.get(kind, 0)
        faults.append(kind)
    return faults
