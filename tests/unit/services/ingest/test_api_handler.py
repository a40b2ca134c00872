"""services.ingest.api.ConversionsApi over a real aiohttp server, with a fake publisher."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.ingest import api
from services.ingest.api import ConversionsApi, PublishUnavailable
from services.ingest.validation import validate_event
from shared.kafka.api_tokens import TokenStore, new_token
from shared.runtime.settings import Settings

AD = "549755885175"
OTHER_AD = "42"
H1 = hashlib.sha256(b"alice@example.com").hexdigest()


class FakePublisher:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, list[bytes], int]] = []
        self.fail = False
        self.delay_s = 0.0

    async def publish(self, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise PublishUnavailable("broker down")
        self.calls.append((topic, key, list(values), ts_ms))


def event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": int(time.time()) - 60,
        "event_id": f"ev-{i}",
        "user_data": {"em": [H1]},
    }
    base.update(overrides)
    return base


@pytest.fixture
def setup():
    token, record = new_token(AD)
    other_token, other_record = new_token(OTHER_AD)
    store = TokenStore([record, other_record])
    publisher = FakePublisher()
    settings = dataclasses.replace(
        Settings(namespace="ns1"), api_rate_per_minute=0, api_max_body_bytes=200_000
    )
    return settings, store, publisher, token, other_token


async def _client(settings, store, publisher, **kwargs) -> TestClient:
    handler = ConversionsApi(settings, store, publisher, validate_event, **kwargs)
    app = web.Application()
    app.router.add_routes(handler.routes())
    client = TestClient(TestServer(app))
    await client.start_server()
    client.handler = handler  # type: ignore[attr-defined]
    return client


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _post(client, token, body, ad=AD, query="") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with client.post(
        f"/v5/ad_accounts/{ad}/events{query}", data=data, headers=_headers(token)
    ) as response:
        return response.status, orjson.loads(await response.read())


async def test_all_valid_is_200_and_published_once_in_order(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher)
    try:
        status, body = await _post(client, token, {"data": [event(1), event(2)]})
    finally:
        await client.close()
    assert status == 200 and body["num_events_processed"] == 2
    assert len(publisher.calls) == 1
    topic, key, values, _ts = publisher.calls[0]
    assert topic == "ns1.conversions.raw" and key == AD.encode()
    assert [orjson.loads(v)["event"]["event_id"] for v in values] == ["ev-1", "ev-2"]


async def test_partly_failed_is_422_and_only_processed_events_are_published(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher)
    try:
        status, body = await _post(
            client, token, {"data": [event(1), event(2, event_time=int(time.time() * 1000))]}
        )
    finally:
        await client.close()
    assert status == 422
    assert [e["status"] for e in body["details"]["events"]] == ["processed", "failed"]
    assert len(publisher.calls[0][2]) == 1


async def test_test_mode_answers_but_publishes_nothing(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher)
    try:
        status, body = await _post(client, token, {"data": [event(1)]}, query="?test=True")
    finally:
        await client.close()
    assert status == 200 and body["num_events_processed"] == 1
    assert publisher.calls == []


async def test_no_token_or_unknown_token_is_401_code_2(setup):
    settings, store, publisher, token, _ = setup
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    client = await _client(settings, store, publisher)
    try:
        results = [await _post(client, t, {"data": [event()]}) for t in (None, "x", forged)]
    finally:
        await client.close()
    assert results == [(401, {"code": 2, "message": "Authentication failed."})] * 3
    assert publisher.calls == []


async def test_token_of_another_ad_account_is_403_code_29(setup):
    settings, store, publisher, _, other_token = setup
    client = await _client(settings, store, publisher)
    try:
        status, body = await _post(client, other_token, {"data": [event()]})
    finally:
        await client.close()
    assert status == 403 and body["code"] == 29
    assert publisher.calls == []


async def test_bad_body_is_400_code_4196(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher)
    try:
        answers = [
            await _post(client, token, b"not json"),
            await _post(client, token, {"data": []}),
            await _post(client, token, {"nodata": 1}),
        ]
    finally:
        await client.close()
    assert [(s, b["code"]) for s, b in answers] == [(400, 4196)] * 3


async def test_body_over_the_limit_is_413(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher)
    try:
        big = {"data": [event(i, custom_data={"content_name": "x" * 900}) for i in range(300)]}
        status, body = await _post(client, token, big)
    finally:
        await client.close()
    assert status == 413 and body["code"] == api.CODE_TOO_LARGE
    assert publisher.calls == []


async def test_chunked_body_over_the_limit_is_413(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher)

    async def chunks():
        yield b'{"data": ['
        for i in range(400):
            yield orjson.dumps(event(i, custom_data={"content_name": "x" * 900})) + b","
        yield orjson.dumps(event()) + b"]}"

    try:
        async with client.post(
            f"/v5/ad_accounts/{AD}/events", data=chunks(), headers=_headers(token)
        ) as response:
            status = response.status
    finally:
        await client.close()
    assert status == 413 and publisher.calls == []


async def test_rate_limit_is_429_code_8_per_ad_account(setup):
    settings, store, publisher, token, other_token = setup
    settings = dataclasses.replace(settings, api_rate_per_minute=2)
    client = await _client(settings, store, publisher)
    try:
        answers = [await _post(client, token, {"data": [event()]}) for _ in range(3)]
        async with client.post(
            f"/v5/ad_accounts/{AD}/events", data=b"{}", headers=_headers(token)
        ) as response:
            retry_after = response.headers.get("Retry-After")
    finally:
        await client.close()
    assert [s for s, _ in answers] == [200, 200, 429]
    assert answers[2][1]["code"] == 8
    assert retry_after is not None and int(retry_after) >= 1


async def test_broker_unavailable_is_503_code_4197(setup):
    settings, store, publisher, token, _ = setup
    publisher.fail = True
    client = await _client(settings, store, publisher)
    try:
        status, body = await _post(client, token, {"data": [event()]})
    finally:
        await client.close()
    assert status == 503 and body["code"] == 4197


async def test_not_ready_is_503(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher, is_ready=lambda: False)
    try:
        status, body = await _post(client, token, {"data": [event()]})
    finally:
        await client.close()
    assert status == 503 and body["code"] == 4197 and publisher.calls == []


async def test_overload_answers_503_instead_of_queueing(setup):
    settings, store, publisher, token, _ = setup
    settings = dataclasses.replace(settings, api_max_in_flight=2)
    publisher.delay_s = 0.3
    client = await _client(settings, store, publisher)
    try:
        answers = await asyncio.gather(
            *(_post(client, token, {"data": [event(i)]}) for i in range(5))
        )
        assert client.handler.in_flight == 0
    finally:
        await client.close()
    statuses = sorted(s for s, _ in answers)
    assert statuses == [200, 200, 503, 503, 503]
    assert len(publisher.calls) == 2
