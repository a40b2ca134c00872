"""services.ingest.api: the pure parts (parsing, per-event processing, responses, limiter)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
import pytest

from services.ingest import api
from services.ingest.api import (
    ApiError,
    EventResult,
    RateLimiter,
    bearer_token,
    build_response,
    parse_body,
    parse_test_flag,
    process_events,
)
from services.ingest.validation import validate_event
from tests.unit.services.ingest import factories

RECEIVED_MS = 1_764_151_200_000
EVENT_TIME = 1_764_151_000
AD = "549755885175"
EMAIL = "alice.smith@example.com"
H1 = hashlib.sha256(EMAIL.encode()).hexdigest()


def event(**overrides: Any) -> dict[str, Any]:
    return factories.event(em=H1, **overrides)


def process(events: list[Any], max_record_bytes: int = 1_000_000):
    return process_events(
        events,
        ad_account_id=AD,
        received_at_ms=RECEIVED_MS,
        validate=validate_event,
        max_record_bytes=max_record_bytes,
    )


# ------------------------------------------------------------------ ?test=


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, False),
        ({"test": "true"}, True),
        ({"test": "True"}, True),
        ({"test": "TRUE"}, True),
        ({"test": "false"}, False),
        ({"test": "False"}, False),
    ],
)
def test_test_flag_accepts_true_and_false_in_any_case(query, expected):
    assert parse_test_flag(query) is expected


@pytest.mark.parametrize("raw", ["1", "yes", "", "truee"])
def test_test_flag_rejects_anything_else_with_400(raw):
    with pytest.raises(ApiError) as info:
        parse_test_flag({"test": raw})
    assert (info.value.status, info.value.code) == (400, api.CODE_BAD_REQUEST)


# ------------------------------------------------------------------ Authorization


def test_bearer_token_is_read_from_the_header():
    assert bearer_token("Bearer cvm_abc") == "cvm_abc"
    assert bearer_token("bearer   cvm_abc ") == "cvm_abc"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer  ", "Basic dXNlcjpwdw==", "cvm_x"])
def test_bearer_token_missing_or_other_scheme_is_none(header):
    assert bearer_token(header) is None


# ------------------------------------------------------------------ body


def _bad_body(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_body(raw)
    assert info.value.status == 400
    assert info.value.code == api.CODE_BAD_REQUEST
    return info.value


def test_body_that_is_not_json_is_400():
    assert "JSON" in _bad_body(b"event_name=checkout").message


def test_body_that_is_not_an_object_is_400():
    _bad_body(b"[1, 2]")


def test_missing_data_is_400():
    assert "'data'" in _bad_body(b"{}").message


def test_null_data_is_400():
    _bad_body(b'{"data": null}')


def test_empty_data_is_400():
    assert "at least 1" in _bad_body(b'{"data": []}').message


def test_1001_events_is_400_and_1000_is_fine():
    assert "1001" in _bad_body(orjson.dumps({"data": [{}] * 1001})).message
    assert len(parse_body(orjson.dumps({"data": [{}] * 1000}))) == 1000


def test_unknown_body_field_is_400():
    assert "extra" in _bad_body(b'{"data": [{}], "extra": 1}').message


# ------------------------------------------------------------------ per event


def test_valid_event_is_processed_with_the_contract_envelope():
    ev = event(custom_data={"value": "72.39", "currency": "USD"}, event_source_url=None)
    results, values = process([ev])
    assert results == [EventResult("processed")]
    assert [orjson.loads(v) for v in values] == [
        {"ad_account_id": AD, "source": "api", "received_at_ms": RECEIVED_MS, "event": ev}
    ]


def test_envelope_holds_the_event_as_received_not_normalised():
    ev = event(user_data={"em": [H1.upper()]})
    results, values = process([ev])
    assert results[0].status == "processed"
    assert orjson.loads(values[0])["event"]["user_data"]["em"] == [H1.upper()]


def test_millisecond_event_time_fails_that_event_only():
    results, values = process([event(event_id="a"), event(event_time=EVENT_TIME * 1000)])
    assert [r.status for r in results] == ["processed", "failed"]
    assert "milliseconds" in results[1].error_message
    assert len(values) == 1 and orjson.loads(values[0])["event"]["event_id"] == "a"


def test_plaintext_email_fails_with_must_be_hashed_and_never_echoes_it():
    results, values = process([event(user_data={"em": [EMAIL]})])
    assert results[0].status == "failed"
    assert "must be hashed" in results[0].error_message
    assert EMAIL not in results[0].error_message
    assert values == []


def test_results_keep_request_order_and_same_event_id_is_processed_twice():
    events = [event(), event(event_name="nope"), event(), "not an object"]
    results, values = process(events)
    assert [r.status for r in results] == ["processed", "failed", "processed", "failed"]
    assert len(values) == 2


def test_event_larger_than_a_record_fails():
    ev = event(custom_data={"content_name": "x" * 500})
    results, values = process([ev], max_record_bytes=300)
    assert results[0].status == "failed" and "too large" in results[0].error_message
    assert values == []


def test_a_crashing_validator_fails_the_event_not_the_call():
    def boom(_event: Any, *, received_at_ms: int) -> None:
        raise RuntimeError("bug")

    results, values = process_events(
        [event()], ad_account_id=AD, received_at_ms=1, validate=boom, max_record_bytes=10**6
    )
    assert results[0].status == "failed" and values == []


# ------------------------------------------------------------------ responses


def test_all_processed_is_200_with_the_pinterest_response():
    status, body = build_response([EventResult("processed")] * 2)
    assert status == 200
    assert body == {
        "num_events_received": 2,
        "num_events_processed": 2,
        "events": [{"status": "processed", "error_message": "", "warning_message": ""}] * 2,
    }


def test_some_failed_is_422_with_details():
    status, body = build_response([EventResult("processed"), EventResult("failed", "bad")])
    assert status == 422
    assert body["code"] == api.CODE_EVENTS_FAILED
    assert body["message"].startswith("1 of 2 events failed")
    details = body["details"]
    assert details["num_events_received"] == 2 and details["num_events_processed"] == 1
    assert [e["status"] for e in details["events"]] == ["processed", "failed"]
    assert details["events"][1]["error_message"] == "bad"


def test_all_failed_is_422_with_zero_processed():
    status, body = build_response([EventResult("failed", "x")])
    assert status == 422 and body["details"]["num_events_processed"] == 0


# ------------------------------------------------------------------ rate limiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_the_burst_then_refuses():
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after_s("a") == 1


def test_rate_limiter_refills_at_the_per_minute_rate():
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.allow("a") and not limiter.allow("a")
    clock.now += 0.5
    assert not limiter.allow("a")
    clock.now += 0.6
    assert limiter.allow("a")


def test_rate_limiter_buckets_are_per_ad_account():
    limiter = RateLimiter(per_minute=60, burst=1, clock=Clock())
    assert limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")


def test_rate_limiter_default_burst_is_a_minute_of_calls():
    limiter = RateLimiter(per_minute=5000, clock=Clock())
    assert sum(limiter.allow("a") for _ in range(5001)) == 5000


def test_rate_limiter_disabled_with_zero():
    limiter = RateLimiter(per_minute=0, clock=Clock())
    assert all(limiter.allow("a") for _ in range(10_000))


# ------------------------------------------------------------------ KafkaPublisher


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.records: list[bytes] = []
        self.capacity = capacity

    def append(self, *, key: bytes, value: bytes, timestamp: int) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append(value)
        return object()

    def close(self) -> None:
        pass


class _Producer:
    """Stands in for AIOKafkaProducer: batches of ``capacity`` records, optional failure."""

    def __init__(self, capacity: int = 1000, error: Exception | None = None) -> None:
        self.capacity = capacity
        self.error = error
        self.sent: list[tuple[str, int, list[bytes]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(8))

    def create_batch(self) -> _Batch:
        return _Batch(self.capacity)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int):
        future = asyncio.get_running_loop().create_future()
        if self.error is not None:
            future.set_exception(self.error)
        else:
            self.sent.append((topic, partition, batch.records))
            future.set_result(None)
        return future


def _publisher(producer: _Producer) -> api.KafkaPublisher:
    from shared.runtime.settings import Settings

    publisher = api.KafkaPublisher(Settings())
    publisher.producer = producer
    publisher.started = True
    return publisher


async def test_publisher_sends_one_batch_per_request_to_the_key_partition():
    from aiokafka.partitioner import murmur2

    producer = _Producer()
    await _publisher(producer).publish("t", AD.encode(), [b"a", b"b", b"c"], 1)
    expected = (murmur2(AD.encode()) & 0x7FFFFFFF) % 8
    assert producer.sent == [("t", expected, [b"a", b"b", b"c"])]


async def test_publisher_splits_what_does_not_fit_one_batch_in_order():
    producer = _Producer(capacity=2)
    await _publisher(producer).publish("t", b"k", [b"1", b"2", b"3", b"4", b"5"], 1)
    assert [records for _, _, records in producer.sent] == [[b"1", b"2"], [b"3", b"4"], [b"5"]]


async def test_publisher_turns_broker_errors_into_publish_unavailable():
    from aiokafka.errors import KafkaTimeoutError

    producer = _Producer(error=KafkaTimeoutError())
    with pytest.raises(api.PublishUnavailable):
        await _publisher(producer).publish("t", b"k", [b"1"], 1)


async def test_publisher_not_started_is_unavailable():
    from shared.runtime.settings import Settings

    with pytest.raises(api.PublishUnavailable):
        await api.KafkaPublisher(Settings()).publish("t", b"k", [b"1"], 1)
