"""services.ingest.handler.ConversionsApi over a real aiohttp server, with a fake publisher."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.ingest import protocol
from services.ingest.handler import ConversionsApi, api_runner
from services.ingest.publisher import PublishUnavailable
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


async def _post(client, token, body, ad=AD, query="", headers=None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with client.post(
        f"/v5/ad_accounts/{ad}/events{query}",
        data=data,
        headers={**_headers(token), **(headers or {})},
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
    assert status == 413 and body["code"] == protocol.CODE_TOO_LARGE
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
    settings = dataclasses.replace(settings, api_max_in_flight=2, api_account_share=1.0)
    publisher.delay_s = 0.3
    client = await _client(settings, store, publisher)
    try:
        answers = await asyncio.gather(
            *(_post(client, token, {"data": [event(i)]}) for i in range(5))
        )
        assert client.handler.slots.held == 0
    finally:
        await client.close()
    statuses = sorted(s for s, _ in answers)
    assert statuses == [200, 200, 503, 503, 503]
    assert len(publisher.calls) == 2


async def test_ad_account_id_with_a_trailing_newline_is_403(setup):
    """``$`` would accept '123\\n'; even a token of exactly that account gets 403."""
    settings, _, publisher, _, _ = setup
    token, record = new_token("123")
    store = TokenStore([dataclasses.replace(record, ad_account_id="123\n")])
    client = await _client(settings, store, publisher)
    try:
        status, body = await _post(client, token, {"data": [event()]}, ad="123%0A")
    finally:
        await client.close()
    assert status == 403 and body["code"] == protocol.CODE_FORBIDDEN
    assert publisher.calls == []


async def test_an_event_nested_too_deeply_fails_alone_and_the_others_are_stored(setup):
    settings, store, publisher, token, _ = setup
    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    body = b'{"data": [%s, %s, %s]}' % (
        orjson.dumps(event(1)),
        orjson.dumps(event(2, action_source="app_android"))[:-1] + b', "app_info": ' + deep + b"}",
        orjson.dumps(event(3)),
    )
    client = await _client(settings, store, publisher)
    try:
        status, answer = await _post(client, token, body)
    finally:
        await client.close()
    assert status == 422
    results = answer["details"]["events"]
    assert [e["status"] for e in results] == ["processed", "failed", "processed"]
    assert results[1]["error_message"]  # rejected by the event rules, on its own
    [(_topic, _key, values, _ts)] = publisher.calls
    assert [orjson.loads(v)["event"]["event_id"] for v in values] == ["ev-1", "ev-3"]


async def test_any_publisher_failure_is_503_never_500(setup):
    """A broker problem that is not PublishUnavailable is still 'retry the request'."""
    settings, store, _, token, _ = setup

    class Broken:
        async def publish(self, *_: Any) -> None:
            raise ConnectionRefusedError("broker down")

    client = await _client(settings, store, Broken())
    try:
        status, body = await _post(client, token, {"data": [event()]})
    finally:
        await client.close()
    assert status == 503 and body["code"] == protocol.CODE_UNAVAILABLE
    assert client.handler.slots.held == 0


async def test_a_bug_is_500_with_a_json_body_and_frees_the_slot(setup):
    settings, store, publisher, token, _ = setup

    def crash(*_: Any, **__: Any) -> list[Any]:
        raise RuntimeError("bug")

    client = await _client(settings, store, publisher)
    client.handler._events = crash
    try:
        status, body = await _post(client, token, {"data": [event()]})
    finally:
        await client.close()
    assert (status, body["code"]) == (500, protocol.CODE_INTERNAL)
    assert client.handler.slots.held == 0


# ------------------------------------------------------------------ slow clients (real sockets)

TIMEOUT_S = 0.6


@contextlib.asynccontextmanager
async def serving(settings: Settings, store: TokenStore, publisher: Any) -> AsyncIterator[Any]:
    """The handler behind ``api_runner`` (the shared-port server) on 127.0.0.1."""
    settings = dataclasses.replace(
        settings, api_header_timeout_s=TIMEOUT_S, api_body_timeout_s=TIMEOUT_S
    )
    api = ConversionsApi(settings, store, publisher, validate_event)
    runner = api_runner(api, settings)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        api.port = port  # type: ignore[attr-defined]
        yield api
    finally:
        await runner.cleanup()


def head(token: str, ad: str = AD, length: int = 100) -> bytes:
    return (
        f"POST /v5/ad_accounts/{ad}/events HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    """One HTTP answer: status, headers (lower-case names), JSON body."""
    head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=TIMEOUT_S + 5)
    status_line, *lines = head_bytes.decode().strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, orjson.loads(body)


async def test_a_connection_with_unfinished_headers_is_closed_after_the_header_timeout(setup):
    settings, store, publisher, token, _ = setup
    async with serving(settings, store, publisher) as api:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        started = time.monotonic()
        writer.write(head(token)[:40])  # half a request line and no end of headers
        await writer.drain()
        closed = await asyncio.wait_for(reader.read(), timeout=TIMEOUT_S + 5)
        waited = time.monotonic() - started
        writer.close()
    assert closed == b""  # closed by the server, no answer
    assert TIMEOUT_S * 0.8 <= waited < TIMEOUT_S + 3


async def test_a_body_that_does_not_arrive_in_time_is_408_and_frees_the_slot(setup):
    settings, store, publisher, token, _ = setup
    async with serving(settings, store, publisher) as api:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(head(token) + b'{"data": [')
        await writer.drain()
        status, headers, body = await read_answer(reader)
        rest = await asyncio.wait_for(reader.read(), timeout=2)  # closed at once
        writer.close()
        held = api.slots.held
    assert rest == b""
    assert (status, body["code"]) == (408, protocol.CODE_BODY_TIMEOUT)
    assert headers["connection"] == "close"
    assert held == 0 and publisher.calls == []


async def test_trickling_bodies_of_one_account_do_not_fail_another_accounts_request(setup):
    """One account holds at most its share of the slots; the others keep being served."""
    settings, store, publisher, token, other_token = setup
    settings = dataclasses.replace(settings, api_max_in_flight=4, api_account_share=0.5)
    async with serving(settings, store, publisher) as api:
        trickling = []
        for _ in range(4):  # as many as the worker has slots
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            writer.write(head(token) + b"{")
            trickling.append((reader, writer))
        await asyncio.gather(*(w.drain() for _, w in trickling))
        while api.slots.held_by(AD) < 2:  # the share: 2 of 4
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{api.port}/v5/ad_accounts/{OTHER_AD}/events"
        async with aiohttp.ClientSession() as session:
            async with session.post(
                url, data=orjson.dumps({"data": [event()]}), headers=_headers(other_token)
            ) as response:
                other_status = response.status
        answers = await asyncio.gather(*(read_answer(r) for r, _ in trickling))
        for _, writer in trickling:
            writer.close()
        held = api.slots.held
    assert other_status == 200
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [408, 408, 429, 429]
    assert held == 0


# ------------------------------------------------------------------ encodings and routes


async def test_a_gzip_body_is_read(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher)
    try:
        body = gzip.compress(orjson.dumps({"data": [event(1)]}))
        status, _ = await _post(client, token, body, headers={"Content-Encoding": "gzip"})
    finally:
        await client.close()
    assert status == 200 and len(publisher.calls) == 1


async def test_a_corrupt_gzip_body_is_400_not_500(setup):
    settings, store, publisher, token, _ = setup
    client = await _client(settings, store, publisher)
    try:
        corrupt = b"\x1f\x8b this is not gzip"
        status, body = await _post(client, token, corrupt, headers={"Content-Encoding": "gzip"})
    finally:
        await client.close()
    assert (status, body["code"]) == (400, protocol.CODE_BAD_REQUEST)
    assert publisher.calls == []


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", f"/v5/ad_accounts/{AD}/events", 405, protocol.CODE_METHOD_NOT_ALLOWED),
        ("POST", f"/v5/ad_accounts/{AD}/events/", 404, protocol.CODE_NOT_FOUND),
        ("POST", "/v5/nothing", 404, protocol.CODE_NOT_FOUND),
    ],
)
async def test_a_wrong_route_or_method_answers_in_the_apis_json_form(
    setup, method: str, path: str, status: int, code: int
):
    """What the spec asks of "other errors": ``{code, message}``, as JSON."""
    settings, store, publisher, _, _ = setup
    async with serving(settings, store, publisher) as api:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{api.port}{path}"
            async with session.request(method, url) as response:
                got = (response.status, response.content_type, await response.read())
                allow = response.headers.get("Allow")
    assert got[:2] == (status, "application/json")
    assert orjson.loads(got[2])["code"] == code
    assert (allow == "POST") == (status == 405)
