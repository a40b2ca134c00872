"""services.ingest.protocol: query, bearer and body parsing, per-event processing, answers."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from services.ingest import protocol
from services.ingest.protocol import (
    ApiError,
    EventResult,
    bearer_token,
    build_response,
    is_ad_account_id,
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


def process(events: list[Any], max_record_bytes: int = 1_000_000, validate: Any = validate_event):
    return process_events(
        events,
        ad_account_id=AD,
        received_at_ms=RECEIVED_MS,
        validate=validate,
        max_record_bytes=max_record_bytes,
    )


def accept_anything(event: Any, **_: Any) -> Any:
    """A validator that accepts every event (the event rules forbid deep objects)."""
    return event


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
    assert (info.value.status, info.value.code) == (400, protocol.CODE_BAD_REQUEST)


# ------------------------------------------------------------------ Authorization


def test_bearer_token_is_read_from_the_header():
    assert bearer_token("Bearer cvm_abc") == "cvm_abc"
    assert bearer_token("bearer   cvm_abc ") == "cvm_abc"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer  ", "Basic dXNlcjpwdw==", "cvm_x"])
def test_bearer_token_missing_or_other_scheme_is_none(header):
    assert bearer_token(header) is None


# ------------------------------------------------------------------ ad account id


@pytest.mark.parametrize("value", ["1", "549755885175", "9" * 18])
def test_ad_account_id_is_1_to_18_digits(value):
    assert is_ad_account_id(value)


@pytest.mark.parametrize("value", ["", "9" * 19, "123\n", "123\r\n", " 123", "12a", "١٢٣"])
def test_ad_account_id_refuses_anything_else_even_a_trailing_newline(value):
    assert not is_ad_account_id(value)


# ------------------------------------------------------------------ body


def _bad_body(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_body(raw)
    assert info.value.status == 400
    assert info.value.code == protocol.CODE_BAD_REQUEST
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


def nested(depth: int) -> Any:
    """A JSON value nested ``depth`` objects deep, as orjson reads it from a request."""
    return orjson.loads(b'{"a":' * depth + b"1" + b"}" * depth)


def test_an_event_nested_too_deeply_to_store_fails_alone():
    """orjson reads 1,024 levels but writes ~255: that event fails, the others are stored."""
    events = [event(event_id="a"), event(event_id="deep", app_info=nested(300)), event()]
    results, values = process(events, validate=accept_anything)
    assert [r.status for r in results] == ["processed", "failed", "processed"]
    assert results[1].error_message == protocol.TOO_DEEP
    assert [orjson.loads(v)["event"]["event_id"] for v in values] == ["a", "ev-1"]


def test_an_event_too_deep_and_invalid_fails_with_the_validation_message():
    results, _ = process([event(event_name="nope", app_info=nested(300))])
    assert results[0].status == "failed"
    assert results[0].error_message != protocol.TOO_DEEP


def test_every_answer_of_a_request_with_a_too_deep_event_can_be_written():
    results, _ = process([event(app_info=nested(300))], validate=accept_anything)
    status, body = build_response(results)
    assert status == 422 and orjson.dumps(body)


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
    assert body["code"] == protocol.CODE_EVENTS_FAILED
    assert body["message"].startswith("1 of 2 events failed")
    details = body["details"]
    assert details["num_events_received"] == 2 and details["num_events_processed"] == 1
    assert [e["status"] for e in details["events"]] == ["processed", "failed"]
    assert details["events"][1]["error_message"] == "bad"


def test_all_failed_is_422_with_zero_processed():
    status, body = build_response([EventResult("failed", "x")])
    assert status == 422 and body["details"]["num_events_processed"] == 0


def test_a_deeply_nested_app_info_is_rejected_alone_by_the_event_rules():
    events = [event(event_id="a"), event(event_id="deep", app_info=nested(300))]
    results, values = process(events)
    assert [r.status for r in results] == ["processed", "failed"]
    assert len(values) == 1


def test_an_unknown_user_data_field_is_processed_and_not_published():
    ev = event()
    ev["user_data"] = {**ev["user_data"], "full_name": "Alice Smith"}
    results, values = process([ev])
    assert [r.status for r in results] == ["processed"]
    published = orjson.loads(values[0])["event"]
    assert "full_name" not in published["user_data"] and published["user_data"]["em"] == [H1]
