"""Web views of the ingest service: the Conversions API (see services/ingest/api.py).

The API is a raw aiohttp handler mounted on the aiohttp Application that Faust's web
driver serves (``app.web.web_app``), so it shares the worker's web port and event loop.
Its producer and token reader start with that web server (aiohttp ``on_startup``) and
stop after the server has drained its requests (``on_cleanup``).
"""

from __future__ import annotations

from typing import Any

import faust

from services.ingest.api import ConversionsApi, KafkaPublisher
from services.ingest.tokens import TokenReader
from services.ingest.validation import validate_event
from shared.logging import get_logger
from shared.settings import Settings

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
    web_app = app.web.web_app
    web_app.router.add_routes(api.routes())

    async def start(_web_app: Any) -> None:
        await publisher.start()
        await reader.start()
        log.info("api_started", path="/v5/ad_accounts/{ad_account_id}/events")

    async def stop(_web_app: Any) -> None:
        await reader.stop()
        await publisher.stop()

    web_app.on_startup.append(start)
    web_app.on_cleanup.append(stop)
    app.conf.convmesh_api = api  # type: ignore[attr-defined]
