"""create_app's web server: Faust's built-in pages that expose data are not served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import faust
import pytest
from aiohttp.test_utils import TestClient, TestServer

from shared.runtime.app import create_app
from shared.runtime.settings import Settings

BUILT_IN_PREFIXES = ("/table", "/router", "/graph", "/assignment", "/performance")


def build_app(tmp_path: Path) -> faust.App:
    app = create_app(Settings(service="dedupe", data_dir=tmp_path, web_port=6199, dev_mode=True))
    app.Table("users", key_type=bytes, value_type=bytes)
    app.web.init_server()  # mounts the built-in pages, as the worker's web server does
    return app


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(tmp_path).web.web_app)) as test_client:
        yield test_client


def route_paths(app: faust.App) -> set[str]:
    return {route.resource.canonical for route in app.web.web_app.router.routes()}


async def test_table_rows_are_not_served(client: TestClient) -> None:
    response = await client.get("/table/users/user-1/")
    assert response.status == 404


async def test_router_is_not_served(client: TestClient) -> None:
    response = await client.get("/router/users/user-1/")
    assert response.status == 404


async def test_root_shows_no_statistics(client: TestClient) -> None:
    response = await client.get("/")
    assert await response.json() == {"status": "OK"}


def test_no_built_in_page_is_mounted(tmp_path: Path) -> None:
    paths = route_paths(build_app(tmp_path))
    assert not [p for p in paths if p.startswith(BUILT_IN_PREFIXES)]


def test_faust_environment_variables_cannot_turn_table_pages_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_WEB_TABLES_ENABLED", "true")
    monkeypatch.setenv("APP_WEB_ROUTER_ENABLED", "true")
    paths = route_paths(build_app(tmp_path))
    assert not [p for p in paths if p.startswith(("/table", "/router"))]


async def test_health_answers_without_a_token(client: TestClient) -> None:
    response = await client.get("/health")
    assert response.status == 200
