"""The operator console, served by the aggregate workers at ``/console``.

The page and its script are static (``services/aggregate/console/``, no build);
they carry nothing secret, so they are served without a token. Their data,
``/console/data``, is an operator view: it gathers ``/metrics`` from every
worker of the mesh (found by the port layout: ``service_base_port + N``) and
``/lanes`` from every aggregate worker, with this worker's operator token.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import faust
import orjson

from services.aggregate.console_data import (
    Lanes,
    Samples,
    lanes_of,
    merge_lanes,
    parse_samples,
    pipeline_of,
)
from shared.runtime.settings import SERVICES, Settings
from shared.runtime.web_auth import operator_page

ASSETS = Path(__file__).with_name("console")
STATIC = {
    "/console": ("index.html", "text/html"),
    "/console/console.js": ("console.js", "application/javascript"),
    "/console/console.css": ("console.css", "text/css"),
}
#: `convmesh up` starts at most 10 workers per service (ports base + 0..9).
MAX_WORKERS = 10
TIMEOUT = aiohttp.ClientTimeout(total=3)


def register(app: faust.App, settings: Settings) -> None:
    for path, (name, content_type) in STATIC.items():
        _static(app, path, ASSETS / name, content_type)

    @operator_page(app, settings, "/lanes")
    async def lanes_view(web: Any, request: Any) -> Any:
        tables: Any = app.tables
        found = lanes_of(
            tables["rows"].items(),
            tables["strata"].items(),
            tables["privacy"].items(),
            settings.privacy_k,
        )
        return web.json(found)

    @operator_page(app, settings, "/console/data")
    async def console_data(web: Any, request: Any) -> Any:
        return web.json(await gather(settings))

    del lanes_view, console_data


def _static(app: faust.App, path: str, file: Path, content_type: str) -> None:
    @app.page(path)
    async def asset(web: Any, request: Any) -> Any:
        return web.bytes(file.read_bytes(), content_type=content_type)

    del asset


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, str] | None:
    try:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(url, headers=headers, timeout=TIMEOUT) as response:
            return response.status, await response.text()
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None


async def _service_workers(
    session: aiohttp.ClientSession, settings: Settings, service: str, path: str
) -> list[str]:
    """The bodies of ``path`` on each worker of ``service``, workers 0.. up to the first gap."""
    bodies = []
    for worker in range(MAX_WORKERS):
        port = settings.service_base_port(service) + worker
        got = await _get(
            session, f"http://{settings.web_host}:{port}{path}", settings.active_operator_token
        )
        if got is None:
            break
        status, body = got
        if status == 200:
            bodies.append(body)
    return bodies


async def gather(settings: Settings) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        metrics = await asyncio.gather(
            *(_service_workers(session, settings, s, "/metrics") for s in SERVICES)
        )
        lanes = await _service_workers(session, settings, "aggregate", "/lanes")
    workers: dict[str, list[Samples]] = {
        service: [parse_samples(text) for text in texts]
        for service, texts in zip(SERVICES, metrics, strict=True)
    }
    merged: Lanes = merge_lanes(orjson.loads(text) for text in lanes)
    return {"at_ms": int(time.time() * 1000), "pipeline": pipeline_of(workers), "lanes": merged}
