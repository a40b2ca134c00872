"""The Conversions API over aiohttp: ``POST /v5/ad_accounts/{ad_account_id}/events``.

``ConversionsApi`` checks who calls and how much, reads the body in bounded time and
answers; the protocol itself is ``services.ingest.protocol`` and the events are stored
by a ``Publisher`` (``services.ingest.publisher``).

Order of the checks of one call (cheapest first; nothing is logged that could hold a
token or an identifier):

1. the worker is ready (tokens loaded, producer started), else 503 ``{code: 4197}``;
2. a declared ``Content-Length`` above the body limit: 413;
3. bearer token: missing or unknown 401 ``{code: 2}``; another ad account 403 ``{code: 29}``;
4. ``?test=``: ``true``/``false`` in any case, else 400;
5. rate limit of the ad account (token bucket, per worker): 429 ``{code: 8}``;
6. in-flight bound: the ad account's share of it 429 ``{code: 8}``, the worker's
   503 ``{code: 4197}``, both with ``Retry-After: 1`` instead of queueing;
7. body: read up to the limit (413) within the body timeout (408 ``{code: 4200}``),
   JSON object with ``data`` of 1-1000 events (400);
8. every event validated and its envelope written, in order; one that fails fails alone;
9. processed events published (unless test mode) in one Kafka record batch per request
   where possible, acknowledged by all in-sync replicas; failure or timeout: 503;
10. 200 when every event was processed, else 422 with ``details``.

Headers have their own deadline, which the handler cannot see (it runs once they are
complete): ``server_options`` gives it to the aiohttp server (see there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from services.ingest.limits import InFlight, RateLimiter, Refusal
from services.ingest.protocol import (
    CODE_AUTH,
    CODE_BAD_REQUEST,
    CODE_BODY_TIMEOUT,
    CODE_FORBIDDEN,
    CODE_INTERNAL,
    CODE_METHOD_NOT_ALLOWED,
    CODE_NOT_FOUND,
    CODE_RATE_LIMIT,
    CODE_TOO_LARGE,
    CODE_UNAVAILABLE,
    ApiError,
    Validator,
    bearer_token,
    build_response,
    error_body,
    is_ad_account_id,
    parse_body,
    parse_test_flag,
    process_events,
)
from services.ingest.publisher import Publisher
from shared.kafka.api_tokens import TokenStore
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

ROUTE = "/v5/ad_accounts/{ad_account_id}/events"
#: aiohttp's default lingering time.
MAX_LINGER_S = 10.0

log = get_logger(component="api")


def server_options(settings: Settings) -> dict[str, Any]:
    """Options of every aiohttp server that serves the API (``web.AppRunner`` kwargs).

    aiohttp has no header timeout of its own, but its keep-alive timer is one: it
    starts when a connection opens (and again after each answer), is not pushed back
    by incoming bytes, and closes the connection if no complete request head has
    arrived when it fires. Set to the header timeout, a connection that sends its
    headers slowly, or nothing at all, is closed after ``api_header_timeout_s``; an
    idle keep-alive connection too (clients reconnect).

    The rest of a body the handler did not read (a refused call) is read and dropped
    ("lingering", so that the client sees the answer rather than a reset) for at most
    aiohttp's 10 s, and never longer than a body may take.
    """
    return {
        "access_log": None,
        "keepalive_timeout": settings.api_header_timeout_s,
        "lingering_time": min(MAX_LINGER_S, settings.api_body_timeout_s),
    }


#: Paths under it answer their errors as the API does, ``{code, message}``.
API_PREFIX = "/v5/"


@web.middleware
async def api_errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A 404 or 405 under ``/v5/`` (no such route, a GET on the events route) in the
    API's ``{code, message}`` form rather than aiohttp's plain text."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if not request.path.startswith(API_PREFIX):
            raise
        return json_response(404, error_body(CODE_NOT_FOUND, "No such resource."))
    except web.HTTPMethodNotAllowed as exc:
        if not request.path.startswith(API_PREFIX):
            raise
        message = f"Method {request.method} is not allowed here; use POST."
        return json_response(
            405,
            error_body(CODE_METHOD_NOT_ALLOWED, message),
            headers={"Allow": exc.headers["Allow"]},
        )


def api_runner(api: ConversionsApi, settings: Settings) -> web.AppRunner:
    """A runner (not set up) of an aiohttp Application that serves only the API."""
    own = web.Application(
        client_max_size=settings.api_max_body_bytes, middlewares=[api_errors_as_json]
    )
    own.router.add_routes(api.routes())
    return web.AppRunner(own, **server_options(settings))


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, or ApiError 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, CODE_TOO_LARGE, f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await request.content.readany()
        except RequestPayloadError:
            # A body aiohttp cannot decode: a corrupt gzip or deflate stream, or a
            # broken chunked encoding. The client's mistake, like a body not JSON.
            raise ApiError(
                400, CODE_BAD_REQUEST, "The request body could not be decoded."
            ) from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise ApiError(413, CODE_TOO_LARGE, f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body_in_time(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """``read_body`` within ``timeout_s`` (for the whole body), else ApiError 408."""
    try:
        async with asyncio.timeout(timeout_s):
            return await read_body(request, limit)
    except TimeoutError:
        raise ApiError(
            408, CODE_BODY_TIMEOUT, f"The request body did not arrive within {timeout_s:g} s."
        ) from None


async def answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` now, then close the connection at once.

    After a body timeout aiohttp would otherwise keep reading ("lingering") the rest
    of the late body for up to 10 s; from a slow client that is not worth waiting for.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the transport sends what it holds, then closes
    return response


def _too_busy(refusal: Refusal) -> web.Response:
    if refusal is Refusal.ACCOUNT_FULL:
        status, code = 429, CODE_RATE_LIMIT
        message = "Too many requests of this ad account at once; retry shortly."
    else:
        status, code = 503, CODE_UNAVAILABLE
        message = "The service is overloaded; retry shortly."
    log.warning("api_overloaded", refusal=refusal.value)
    return json_response(status, error_body(code, message), headers={"Retry-After": "1"})


class ConversionsApi:
    """The request handler of one ingest worker."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenStore,
        publisher: Publisher,
        validate: Validator,
        *,
        is_ready: Callable[[], bool] = lambda: True,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.publisher = publisher
        self.validate = validate
        self.is_ready = is_ready
        self.clock_ms = clock_ms
        self.topic = settings.topic_name("conversions.raw")
        self.limiter = RateLimiter(settings.api_rate_per_minute)
        self.max_body = settings.api_max_body_bytes
        self.slots = InFlight(settings.api_max_in_flight, settings.api_account_share)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            return await self._handle(request)
        except ApiError as err:
            if err.status >= 500:
                log.warning("api_call_refused", status=err.status, code=err.code)
            response = json_response(err.status, error_body(err.code, err.message))
            if err.status == 408:
                return await answer_and_close(request, response)
            return response
        except ConnectionError:
            raise  # the client left: aiohttp drops the connection
        except Exception as exc:  # noqa: BLE001 - a bug: answer without echoing anything
            log.error("api_call_failed", error=type(exc).__name__)
            return json_response(500, error_body(CODE_INTERNAL, "Internal error."))

    async def _handle(self, request: web.Request) -> web.Response:
        if not self.is_ready():
            raise ApiError(503, CODE_UNAVAILABLE, "The service is starting; retry shortly.")
        declared = request.content_length
        if declared is not None and declared > self.max_body:
            raise ApiError(
                413, CODE_TOO_LARGE, f"The request body is larger than {self.max_body} bytes."
            )
        token = bearer_token(request.headers.get("Authorization"))
        record = self.tokens.verify(token) if token is not None else None
        if record is None:
            raise ApiError(401, CODE_AUTH, "Authentication failed.")
        ad_account_id = request.match_info.get("ad_account_id", "")
        if not is_ad_account_id(ad_account_id) or record.ad_account_id != ad_account_id:
            raise ApiError(403, CODE_FORBIDDEN, "You are not permitted to access that resource.")
        test = parse_test_flag(request.query)
        if not self.limiter.allow(ad_account_id):
            retry = self.limiter.retry_after_s(ad_account_id)
            return json_response(
                429,
                error_body(CODE_RATE_LIMIT, "Rate limit exceeded for this ad account."),
                headers={"Retry-After": str(retry)},
            )
        refusal = self.slots.acquire(ad_account_id)
        if refusal is not None:
            return _too_busy(refusal)
        try:
            return await self._events(request, ad_account_id, test)
        finally:
            self.slots.release(ad_account_id)

    async def _events(self, request: web.Request, ad_account_id: str, test: bool) -> web.Response:
        raw = await read_body_in_time(request, self.max_body, self.settings.api_body_timeout_s)
        events = parse_body(raw)
        del raw
        received_at_ms = self.clock_ms()
        results, values = process_events(
            events,
            ad_account_id=ad_account_id,
            received_at_ms=received_at_ms,
            validate=self.validate,
            max_record_bytes=self.settings.max_record_bytes,
        )
        del events
        if values and not test:
            await self._publish(ad_account_id, values, received_at_ms)
        status, body = build_response(results)
        return json_response(status, body)

    async def _publish(self, ad_account_id: str, values: list[bytes], received_at_ms: int) -> None:
        try:
            await self.publisher.publish(
                self.topic, ad_account_id.encode("ascii"), values, received_at_ms
            )
        except Exception as exc:  # noqa: BLE001 - PublishUnavailable, or any broker trouble
            # Whatever went wrong on the way to the broker, the contract's answer is
            # 503 (retry the whole request), never 500.
            log.warning("api_publish_unavailable", error=type(exc).__name__, records=len(values))
            raise ApiError(
                503,
                CODE_UNAVAILABLE,
                "The events could not be stored right now; retry the whole request.",
            ) from None

    def routes(self) -> list[web.RouteDef]:
        return [web.post(ROUTE, self.handle)]
