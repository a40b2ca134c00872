"""Where `convmesh send` delivers batches: the HTTP API, or conversions.raw.

A sender's ``send(batch)`` returns the batch's rejected events' reasons
(HTTP: the API's ``error_message`` per failed event; the topic: none, since
ingest rejects asynchronously to conversions.dlq — see `convmesh dlq`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from ops.send.backoff import pause_s, should_retry
from shared.contract.errors import ConvmeshError
from shared.kafka.client_config import client_kwargs
from shared.runtime.settings import Settings

Sleep = Callable[[float], Awaitable[None]]


class HttpSender:
    """POST /v5/ad_accounts/{id}/events, retrying 429 and 503 with backoff."""

    def __init__(
        self, url: str, token: str, ad_account: str, *, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/v5/ad_accounts/{ad_account}/events"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.sleep = sleep
        self.retries = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpSender:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(self, *_: Any) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, batch: list[dict[str, Any]]) -> list[str]:
        assert self._session is not None, "use `async with HttpSender(...)`"
        body = orjson.dumps({"data": batch})
        attempt = 0
        while True:
            attempt += 1
            async with self._session.post(self.endpoint, data=body, headers=self.headers) as resp:
                status, text = resp.status, await resp.read()
                retry_after = resp.headers.get("Retry-After")
            if status == 200:
                return []
            if status == 422:
                details = orjson.loads(text).get("details", {})
                return [
                    e["error_message"] for e in details.get("events", []) if e["status"] == "failed"
                ]
            if should_retry(status, attempt):
                self.retries += 1
                await self.sleep(pause_s(attempt, retry_after))
                continue
            raise ConvmeshError(f"the API answered {status}: {_message(text)}")


def _message(text: bytes) -> str:
    try:
        return str(orjson.loads(text).get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return text[:200].decode("utf-8", "replace")


class TopicSender:
    """Envelopes ``{ad_account_id, source: batch, received_at_ms, event}`` to conversions.raw."""

    def __init__(self, settings: Settings, ad_account: str) -> None:
        self.settings = settings
        self.topic = settings.topic_name("conversions.raw")
        self.key = ad_account.encode()
        self.ad_account = ad_account
        self.retries = 0
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> TopicSender:
        self._producer = AIOKafkaProducer(
            **client_kwargs(self.settings), acks="all", enable_idempotence=True, linger_ms=20
        )
        await self._producer.start()
        return self

    async def __aexit__(self, *_: Any) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(self, batch: list[dict[str, Any]]) -> list[str]:
        assert self._producer is not None, "use `async with TopicSender(...)`"
        now_ms = int(time.time() * 1000)
        futures = [
            await self._producer.send(
                self.topic,
                orjson.dumps(
                    {
                        "ad_account_id": self.ad_account,
                        "source": "batch",
                        "received_at_ms": now_ms,
                        "event": event,
                    }
                ),
                key=self.key,
            )
            for event in batch
        ]
        await asyncio.gather(*futures)
        return []
