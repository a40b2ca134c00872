"""A table lookup asked of any worker is answered by the worker owning the key.

Two workers per service; every accepted conversion_key is looked up in dedupe's
``seen`` table through both dedupe workers: both answers come from the same
worker (the owner of the key's partition), and some keys are owned by the
worker that was not asked (so the request was forwarded).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
import orjson

from ops.workload import generate
from shared.kafka.topic_io import produce
from tests.conftest import delete_namespace_topics
from tests.integration.helpers import cli_env, convmesh, convmesh_json, free_web_port_base, kafka
from tests.integration.test_observability import wait_for


async def lookup(url: str, key: str, token: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(
            f"{url}/tables/seen/lookup?key={quote(key, safe='')}", headers=headers
        ) as response:
            return response.status, orjson.loads(await response.text())


def test_lookups_are_answered_by_the_owning_worker(bootstrap: str, tmp_path: Path) -> None:
    namespace = f"t-route-{uuid.uuid4().hex[:8]}"
    base = int(os.environ.get("CONVMESH_TEST_WEB_PORT_BASE") or free_web_port_base(7600, 2))
    env = cli_env(
        KAFKA_BOOTSTRAP=bootstrap,
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DATA_DIR=str(tmp_path / "mesh"),
        CONVMESH_WEB_PORT_BASE=str(base),
    )
    up = convmesh("up", "--workers", "2", env=env, timeout=300)
    try:
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        # Exit 3 is "not every worker ready": with two workers per service a late
        # rebalance can take one out for a moment after `up`; only URLs are needed.
        status = convmesh_json("status", "--json", env=env, ok_codes=(0, 3))
        token = unquote(status["console_url"].split("#token=", 1)[1])
        dedupe = [s["url"] for s in status["services"] if s["name"] == "dedupe"]
        assert len(dedupe) == 2
        workload = generate(seed=3, conversions=30)
        raws = workload.records["conversions.raw"]
        asyncio.run(
            produce(kafka(bootstrap), [(f"{namespace}.{r.topic}", r.key, r.value) for r in raws])
        )
        keys = sorted(
            {lbl.conversion_key for lbl in workload.raw_labels if lbl.expect == "accepted"}
        )

        def all_found() -> bool:
            return all(asyncio.run(lookup(dedupe[0], k, token))[0] == 200 for k in keys)

        wait_for(all_found, 180, "every accepted key in dedupe's seen table")
        forwarded = 0
        for key in keys:
            (s0, a0), (s1, a1) = (asyncio.run(lookup(url, key, token)) for url in dedupe)
            assert s0 == s1 == 200
            assert a0 == a1  # the same owner answered both
            forwarded += 1 if a0["worker"] == 1 else 0
        assert 0 < forwarded < len(keys)
    finally:
        down = convmesh("down", env=env, timeout=120)
        asyncio.run(delete_namespace_topics(bootstrap, namespace))
        assert down.returncode == 0, down.stderr
