"""services.ingest.stats: the /stats view is an operator view."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.ingest.stats import IngestStats, register_stats_view
from shared.runtime.app import create_app
from shared.runtime.settings import Settings

TOKEN = "an-operator-token-of-at-least-32-bytes"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = Settings(service="ingest", data_dir=tmp_path, web_port=6199, operator_token=TOKEN)
    app = create_app(settings)
    stats = IngestStats()
    stats.count_valid("api")
    register_stats_view(app, settings, stats)
    app.web.init_server()
    async with TestClient(TestServer(app.web.web_app)) as test_client:
        yield test_client


async def test_stats_refuses_a_request_without_the_operator_token(client: TestClient) -> None:
    assert (await client.get("/stats")).status == 401


async def test_stats_answers_the_operator_token(client: TestClient) -> None:
    response = await client.get("/stats", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert (await response.json())["totals"]["valid"] == 1
