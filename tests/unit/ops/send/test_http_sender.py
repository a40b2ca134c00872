"""`convmesh send` against a stand-in API on loopback: retries and rejects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from ops.send.senders import HttpSender
from shared.contract.errors import ConvmeshError


class FakeApi:
    """Answers the queued statuses first, then 422 failing events without an event_id."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.statuses:
            return web.json_response({"code": 8}, status=self.statuses.pop(0))
        assert request.headers["Authorization"] == "Bearer tok"
        events = (await request.json())["data"]
        results = [
            {
                "status": "processed" if "event_id" in e else "failed",
                "error_message": "" if "event_id" in e else "event_id is required",
                "warning_message": "",
            }
            for e in events
        ]
        failed = [r for r in results if r["status"] == "failed"]
        body = {"num_events_received": len(events), "events": results}
        if not failed:
            return web.json_response(body)
        return web.json_response({"code": 4, "message": "failed", "details": body}, status=422)


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(api: FakeApi) -> str:
        app = web.Application()
        app.router.add_post("/v5/ad_accounts/{ad}/events", api.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def no_sleep(_s: float) -> None:
    return None


async def test_429_and_503_are_retried_until_accepted(serve: Any) -> None:
    api = FakeApi(429, 503)
    async with HttpSender(await serve(api), "tok", "1", sleep=no_sleep) as sender:
        assert await sender.send([{"event_id": "1"}]) == []
    assert api.requests == 3 and sender.retries == 2


async def test_failed_events_come_back_with_their_reasons(serve: Any) -> None:
    async with HttpSender(await serve(FakeApi()), "tok", "1", sleep=no_sleep) as sender:
        assert await sender.send([{"event_id": "1"}, {}]) == ["event_id is required"]


async def test_an_auth_error_stops_the_send(serve: Any) -> None:
    async with HttpSender(await serve(FakeApi(401)), "tok", "1", sleep=no_sleep) as sender:
        with pytest.raises(ConvmeshError, match="401"):
            await sender.send([{"event_id": "1"}])
