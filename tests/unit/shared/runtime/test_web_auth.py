"""shared.runtime.web_auth: the operator token on web views."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from shared.runtime.app import create_app
from shared.runtime.settings import Settings
from shared.runtime.web_auth import bearer_token_matches, operator_page

TOKEN = "an-operator-token-of-at-least-32-bytes"


def test_the_right_bearer_token_matches() -> None:
    assert bearer_token_matches(f"Bearer {TOKEN}", TOKEN)


def test_the_scheme_is_case_insensitive() -> None:
    assert bearer_token_matches(f"bearer {TOKEN}", TOKEN)


def test_a_wrong_token_does_not_match() -> None:
    assert not bearer_token_matches("Bearer not-the-token", TOKEN)


def test_a_prefix_of_the_token_does_not_match() -> None:
    assert not bearer_token_matches(f"Bearer {TOKEN[:-1]}", TOKEN)


def test_no_header_does_not_match() -> None:
    assert not bearer_token_matches(None, TOKEN)


def test_another_scheme_does_not_match() -> None:
    assert not bearer_token_matches(f"Basic {TOKEN}", TOKEN)


def test_nothing_matches_when_no_token_is_configured() -> None:
    assert not bearer_token_matches("Bearer ", "")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6199, operator_token=TOKEN)
    app = create_app(settings)

    @operator_page(app, settings, "/secret")
    async def secret(web: Any, request: Any) -> Any:
        return web.json({"secret": 42})

    app.web.init_server()
    async with TestClient(TestServer(app.web.web_app)) as test_client:
        yield test_client


async def test_operator_page_refuses_a_request_without_token(client: TestClient) -> None:
    response = await client.get("/secret")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_operator_page_refuses_a_wrong_token(client: TestClient) -> None:
    response = await client.get("/secret", headers={"Authorization": "Bearer wrong"})
    assert response.status == 401


async def test_operator_page_answers_the_operator_token(client: TestClient) -> None:
    response = await client.get("/secret", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert await response.json() == {"secret": 42}


async def test_operator_page_refuses_head_without_token(client: TestClient) -> None:
    response = await client.head("/secret")
    assert response.status == 401


async def test_development_mode_uses_the_development_token(tmp_path: Path) -> None:
    settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6199, dev_mode=True)
    app = create_app(settings)

    @operator_page(app, settings, "/secret")
    async def secret(web: Any, request: Any) -> Any:
        return web.json({})

    app.web.init_server()
    header = {"Authorization": f"Bearer {settings.active_operator_token}"}
    async with TestClient(TestServer(app.web.web_app)) as client:
        assert (await client.get("/secret", headers=header)).status == 200
