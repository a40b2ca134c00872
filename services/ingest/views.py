"""Web views of the ingest service: the Conversions API (services/ingest/handler.py).

The API is a raw aiohttp handler mounted on the aiohttp Application that Faust's web
driver serves (``app.web.web_app``), so it shares the worker's web port and event loop.
Its producer and token reader start with that web server (aiohttp ``on_startup``) and
stop after the server has drained its requests (``on_cleanup``).

With ``CONVMESH_API_PORT`` set, the worker also serves the API from an aiohttp runner of
its own on that port, bound with ``SO_REUSEPORT``: several ingest workers then share one
API port and the kernel spreads connections over them (Faust's web server binds each
worker's own port without ``reuse_port``, which stays for /health and /ready).

Both servers get the API's server options (``handler.server_options``: the header
timeout): Faust makes its runner without options, so ``register`` gives Faust's
web driver a runner made with them before the web server starts.
"""

from __future__ import annotations

from typing import Any

import faust
from aiohttp import web

from services.ingest.handler import ConversionsApi, api_errors_as_json, api_runner, server_options
from services.ingest.publisher import KafkaPublisher
from services.ingest.validation import validate_event
from shared.kafka.api_tokens import TokenReader
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

log = get_logger(component="api")


def register(app: faust.App, settings: Settings) -> None:
    """Mount ``POST /v5/ad_accounts/{ad_account_id}/events`` on the worker's web server."""
    reader = TokenReader(settings)
    publisher = KafkaPublisher(settings)
    api = ConversionsApi(
        settings,
        reader.store,
        publisher,
        validate_event,
        is_ready=lambda: publisher.started and reader.ready.is_set(),
    )
    web_app = app.web.web_app  # type: ignore[attr-defined]  # the aiohttp driver's Application
    web_app.router.add_routes(api.routes())
    web_app.middlewares.append(api_errors_as_json)
    # Faust's aiohttp driver serves web_app with ``_runner`` (made with access_log=None
    # only) from start_server(), which runs after this: same runner, plus our options.
    app.web._runner = web.AppRunner(web_app, **server_options(settings))  # type: ignore[attr-defined]
    shared_runner: list[web.AppRunner] = []

    async def start(_web_app: Any) -> None:
        await publisher.start()
        await reader.start()
        if settings.api_port:
            runner = api_runner(api, settings)
            await runner.setup()
            site = web.TCPSite(runner, settings.web_host, settings.api_port, reuse_port=True)
            await site.start()
            shared_runner.append(runner)
        log.info("api_started", api_port=settings.api_port or settings.web_port)

    async def stop(_web_app: Any) -> None:
        while shared_runner:
            await shared_runner.pop().cleanup()
        await reader.stop()
        await publisher.stop()

    web_app.on_startup.append(start)
    web_app.on_cleanup.append(stop)
    app.conf.convmesh_api = api
