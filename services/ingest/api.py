"""The Conversions API: ``POST /v5/ad_accounts/{ad_account_id}/events`` (Pinterest v5 wire format).

The pure parts (query parsing, bearer parsing, request-body checks, per-event
processing, response bodies, the rate limiter) are plain functions and classes so that
they can be unit-tested without a server. ``ConversionsApi`` ties them to aiohttp, the
token store and a ``Publisher`` (``KafkaPublisher`` in production).

Order of the checks of one call (cheapest first; nothing is logged that could hold a
token or an identifier):

1. the worker is ready (tokens loaded, producer started), else 503 ``{code: 4197}``;
2. a declared ``Content-Length`` above the body limit: 413;
3. bearer token: missing or unknown 401 ``{code: 2}``; another ad account 403 ``{code: 29}``;
4. ``?test=``: ``true``/``false`` in any case, else 400;
5. rate limit of the ad account (token bucket, per worker): 429 ``{code: 8}``;
6. in-flight bound of the worker: 503 ``{code: 4197}`` instead of queueing;
7. body: read up to the limit (413), JSON object with ``data`` of 1-1000 events (400);
8. every event validated (``services.ingest.validation.validate_event``), in order;
9. processed events published (unless test mode) in one Kafka record batch per request
   where possible, acknowledged by all in-sync replicas; failure or timeout: 503;
10. 200 when every event was processed, else 422 with ``details``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from shared.contract.errors import InvalidEvent
from shared.kafka.api_tokens import AD_ACCOUNT_RE, TokenStore
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

MAX_EVENTS = 1000

CODE_AUTH = 2
CODE_RATE_LIMIT = 8
CODE_FORBIDDEN = 29
CODE_BAD_REQUEST = 4196
CODE_UNAVAILABLE = 4197
CODE_EVENTS_FAILED = 4198
CODE_TOO_LARGE = 4199

_BODY_FIELDS = frozenset({"data"})

log = get_logger(component="api")

Validator = Callable[..., Any]


class ApiError(Exception):
    """An error answer ``{code, message}`` with its HTTP status."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class PublishUnavailable(Exception):
    """The broker did not acknowledge a request's records in time."""


class Publisher(Protocol):
    async def publish(self, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int) -> None:
        """Write ``values`` (in order) under ``key``; raise PublishUnavailable on failure."""


# ------------------------------------------------------------------ pure parts


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def parse_test_flag(query: Mapping[str, str]) -> bool:
    """``?test=`` accepts true/false in any letter case (the SDK sends ``True``/``False``)."""
    raw = query.get("test")
    if raw is None:
        return False
    lowered = raw.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ApiError(400, CODE_BAD_REQUEST, "Parameter 'test' must be true or false.")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def parse_body(raw: bytes) -> list[Any]:
    """The ``data`` array of a request body, or ApiError 400."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, CODE_BAD_REQUEST, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, CODE_BAD_REQUEST, "The request body must be a JSON object.")
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        raise ApiError(
            400, CODE_BAD_REQUEST, f"Unknown field in the request body: '{unknown[0][:64]}'."
        )
    data = body.get("data")
    if data is None:
        raise ApiError(400, CODE_BAD_REQUEST, "'data' is a required property.")
    if not isinstance(data, list):
        raise ApiError(400, CODE_BAD_REQUEST, "'data' must be an array of events.")
    if not data:
        raise ApiError(400, CODE_BAD_REQUEST, "'data' must hold at least 1 event.")
    if len(data) > MAX_EVENTS:
        raise ApiError(
            400,
            CODE_BAD_REQUEST,
            f"'data' holds {len(data)} events; at most {MAX_EVENTS} are allowed per request.",
        )
    return data


@dataclass(frozen=True, slots=True)
class EventResult:
    status: str  # "processed" | "failed"
    error_message: str = ""
    warning_message: str = ""


PROCESSED = EventResult("processed")


def envelope_bytes(ad_account_id: str, received_at_ms: int, event: Any) -> bytes:
    """The ``conversions.raw`` value: the contract's envelope around the event as received."""
    return orjson.dumps(
        {
            "ad_account_id": ad_account_id,
            "source": "api",
            "received_at_ms": received_at_ms,
            "event": event,
        }
    )


def process_events(
    events: Sequence[Any],
    *,
    ad_account_id: str,
    received_at_ms: int,
    validate: Validator,
    max_record_bytes: int,
) -> tuple[list[EventResult], list[bytes]]:
    """Validate every event in order: its result, and the envelopes of processed events.

    The envelope is serialised before validation so that it holds the event exactly as
    received, whatever the validator normalises.
    """
    results: list[EventResult] = []
    values: list[bytes] = []
    for index, event in enumerate(events):
        value = (
            envelope_bytes(ad_account_id, received_at_ms, event) if isinstance(event, dict) else b""
        )
        try:
            validate(event, received_at_ms=received_at_ms)
        except InvalidEvent as exc:
            results.append(EventResult("failed", exc.message))
            continue
        except Exception as exc:  # noqa: BLE001 - one broken event must not fail the call
            log.error("api_validator_crashed", error=type(exc).__name__, index=index)
            results.append(EventResult("failed", "The event could not be validated."))
            continue
        if not value:  # a validator must reject a non-object; never publish one
            results.append(EventResult("failed", f"data[{index}] must be a JSON object."))
            continue
        if len(value) > max_record_bytes:
            results.append(
                EventResult("failed", f"The event is too large (max {max_record_bytes} bytes).")
            )
            continue
        results.append(PROCESSED)
        values.append(value)
    return results, values


def response_body(results: Sequence[EventResult]) -> dict[str, Any]:
    """The ConversionApiResponse object: counts and per-event results in request order."""
    processed = sum(1 for r in results if r.status == "processed")
    return {
        "num_events_received": len(results),
        "num_events_processed": processed,
        "events": [
            {
                "status": r.status,
                "error_message": r.error_message,
                "warning_message": r.warning_message,
            }
            for r in results
        ],
    }


def build_response(results: Sequence[EventResult]) -> tuple[int, dict[str, Any]]:
    """200 with the response when every event was processed, else 422 with it in details."""
    body = response_body(results)
    failed = body["num_events_received"] - body["num_events_processed"]
    if failed == 0:
        return 200, body
    return 422, {
        "code": CODE_EVENTS_FAILED,
        "message": (
            f"{failed} of {body['num_events_received']} events failed validation; "
            "see details.events for each event."
        ),
        "details": body,
    }


class RateLimiter:
    """A token bucket per key (ad account), in one worker's memory.

    ``per_minute`` calls are refilled evenly over a minute and at most ``burst`` (default:
    ``per_minute``) can be spent at once. Buckets are per worker: with N workers behind one
    port the effective limit is up to N times higher. ``per_minute <= 0`` disables it.
    """

    def __init__(
        self,
        per_minute: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.capacity = float(burst if burst is not None else per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}

    def allow(self, key: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.capacity, now]
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def retry_after_s(self, key: str) -> int:
        """Whole seconds until the next call of ``key`` would be allowed."""
        bucket = self._buckets.get(key)
        if bucket is None or self.rate <= 0:
            return 1
        missing = max(0.0, 1.0 - bucket[0])
        return max(1, int(missing / self.rate + 0.999))


# ------------------------------------------------------------------ aiohttp


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
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise ApiError(413, CODE_TOO_LARGE, f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


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
        self.max_in_flight = settings.api_max_in_flight
        self.in_flight = 0

    async def handle(self, request: web.Request) -> web.Response:
        try:
            return await self._handle(request)
        except ApiError as err:
            if err.status >= 500:
                log.warning("api_call_refused", status=err.status, code=err.code)
            return json_response(err.status, error_body(err.code, err.message))

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
        if not AD_ACCOUNT_RE.match(ad_account_id) or record.ad_account_id != ad_account_id:
            raise ApiError(403, CODE_FORBIDDEN, "You are not permitted to access that resource.")
        test = parse_test_flag(request.query)
        if not self.limiter.allow(ad_account_id):
            retry = self.limiter.retry_after_s(ad_account_id)
            return json_response(
                429,
                error_body(CODE_RATE_LIMIT, "Rate limit exceeded for this ad account."),
                headers={"Retry-After": str(retry)},
            )
        if self.in_flight >= self.max_in_flight:
            log.warning("api_overloaded", in_flight=self.in_flight)
            return json_response(
                503,
                error_body(CODE_UNAVAILABLE, "The service is overloaded; retry shortly."),
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        try:
            raw = await read_body(request, self.max_body)
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
                try:
                    await self.publisher.publish(
                        self.topic, ad_account_id.encode("ascii"), values, received_at_ms
                    )
                except PublishUnavailable:
                    raise ApiError(
                        503,
                        CODE_UNAVAILABLE,
                        "The events could not be stored right now; retry the whole request.",
                    ) from None
            status, body = build_response(results)
            return json_response(status, body)
        finally:
            self.in_flight -= 1

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v5/ad_accounts/{ad_account_id}/events", self.handle)]


class KafkaPublisher:
    """Publishes a request's envelopes with an idempotent ``acks=all`` producer of its own.

    All the records of one request share a key (the ad account), hence a partition; they
    are packed into explicit record batches (``create_batch``) of up to ``max_batch_bytes``.
    The broker appends a record batch atomically, so a request that fits in one batch
    (100 typical events are ~70 KB; the default batch limit is ~1 MB) is stored entirely or
    not at all. A larger request is split into several batches: a failure between them can
    leave a prefix stored while the answer is 503; a retry of the whole request is then
    absorbed by downstream deduplication (first accepted event wins).

    A request is published by the least busy producer of a small pool (``producers``):
    aiokafka sends one produce request at a time per broker connection, so with a single
    producer all requests of a worker would wait for each other's broker round trips.
    """

    def __init__(
        self, settings: Settings, *, max_batch_bytes: int = 1_000_000, producers: int = 4
    ) -> None:
        self.settings = settings
        self.timeout_s = settings.api_publish_timeout_s
        self.max_batch_bytes = max_batch_bytes
        self.pool_size = max(1, producers)
        #: aiokafka keeps one produce request in flight per broker connection and one
        #: queued batch per partition, so one producer publishes one request's batch per
        #: broker round trip for a partition; a small pool keeps several in flight.
        self.pool: list[Any] = []
        self._busy: list[int] = []
        self._partitions: dict[str, list[int]] = {}
        self.started = False

    @property
    def producer(self) -> Any:
        return self.pool[0] if self.pool else None

    @producer.setter
    def producer(self, value: Any) -> None:
        self.pool = [value]
        self._busy = [0]

    async def start(self) -> None:
        """Create (inside the running loop, as aiokafka requires) and start the producers."""
        from aiokafka import AIOKafkaProducer

        max_batch_bytes = self.max_batch_bytes
        for _ in range(self.pool_size):
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.bootstrap,
                acks="all",
                enable_idempotence=True,
                max_batch_size=max_batch_bytes,
                max_request_size=max(1_048_576, max_batch_bytes + 65_536),
                request_timeout_ms=int(self.timeout_s * 1000),
                linger_ms=0,
            )
            await producer.start()
            self.pool.append(producer)
            self._busy.append(0)
        self.started = True

    async def stop(self) -> None:
        if self.started:
            self.started = False
            for producer in self.pool:
                await producer.stop()

    async def _partition_of(self, topic: str, key: bytes) -> int:
        from aiokafka.partitioner import murmur2

        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = sorted(await self.producer.partitions_for(topic))
            self._partitions[topic] = partitions
        # the same choice as the Java and aiokafka default partitioners
        return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]

    async def _send(self, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int) -> None:
        index = min(range(len(self.pool)), key=self._busy.__getitem__)
        self._busy[index] += 1
        try:
            await self._send_with(self.pool[index], topic, key, values, ts_ms)
        finally:
            self._busy[index] -= 1

    async def _send_with(
        self, producer: Any, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int
    ) -> None:
        partition = await self._partition_of(topic, key)
        batches = []
        batch = producer.create_batch()
        for value in values:
            if batch.append(key=key, value=value, timestamp=ts_ms) is None:
                batches.append(batch)
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=ts_ms) is None:
                    raise PublishUnavailable("a record does not fit in an empty batch")
        batches.append(batch)
        futures = []
        for b in batches:
            b.close()
            futures.append(await producer.send_batch(b, topic, partition=partition))
        await asyncio.gather(*futures)

    async def publish(self, topic: str, key: bytes, values: Sequence[bytes], ts_ms: int) -> None:
        if not self.started:
            raise PublishUnavailable("the producer is not running")
        try:
            await asyncio.wait_for(self._send(topic, key, values, ts_ms), self.timeout_s)
        except PublishUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - KafkaError, timeouts, closed producer...
            log.warning("api_publish_failed", error=type(exc).__name__, records=len(values))
            raise PublishUnavailable(type(exc).__name__) from exc
