"""The Conversions API protocol (Pinterest v5 wire format), as pure functions.

Everything about one call that needs no server, socket or broker: the ``?test=``
flag, the bearer token, the ad account id of the path, the request body, each
event's result and envelope, and the answer. ``services.ingest.handler`` ties these
to aiohttp; see docs/api.md for the answers and their codes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from services.ingest.validation import published_form
from shared.contract.errors import InvalidEvent
from shared.runtime.logging import get_logger

MAX_EVENTS = 1000

CODE_AUTH = 2
CODE_RATE_LIMIT = 8
CODE_FORBIDDEN = 29
CODE_BAD_REQUEST = 4196
CODE_UNAVAILABLE = 4197
CODE_EVENTS_FAILED = 4198
CODE_TOO_LARGE = 4199
CODE_BODY_TIMEOUT = 4200
CODE_INTERNAL = 4201
CODE_NOT_FOUND = 4202
CODE_METHOD_NOT_ALLOWED = 4203

_BODY_FIELDS = frozenset({"data"})
#: ``fullmatch``, not ``match`` with ``$``: ``$`` also matches before a final newline.
_AD_ACCOUNT_ID = re.compile(r"[0-9]{1,18}")

log = get_logger(component="api")

Validator = Callable[..., Any]


class ApiError(Exception):
    """An error answer ``{code, message}`` with its HTTP status."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def is_ad_account_id(value: str) -> bool:
    """1 to 18 ASCII digits, nothing else (not even a trailing newline)."""
    return _AD_ACCOUNT_ID.fullmatch(value) is not None


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
#: orjson reads 1,024 levels of nesting but writes only about 255.
TOO_DEEP = "The event is nested too deeply to be stored."


def envelope_bytes(ad_account_id: str, received_at_ms: int, event: Any) -> bytes:
    """The ``conversions.raw`` value: the contract's envelope around the event as received.

    Raises ``orjson.JSONEncodeError`` (a TypeError) for what cannot be written back,
    such as an event nested deeper than orjson writes.
    """
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

    One event that cannot be validated or stored fails on its own; the others of
    the request are processed as usual.
    """
    results: list[EventResult] = []
    values: list[bytes] = []
    for index, event in enumerate(events):
        result, value = _process_one(
            index, event, ad_account_id, received_at_ms, validate, max_record_bytes
        )
        results.append(result)
        if value is not None:
            values.append(value)
    return results, values


def _process_one(
    index: int,
    event: Any,
    ad_account_id: str,
    received_at_ms: int,
    validate: Validator,
    max_record_bytes: int,
) -> tuple[EventResult, bytes | None]:
    # The envelope is serialised before validation so that it holds the event
    # as received, whatever the validator normalises (less the user_data fields
    # it ignores: ``published_form``).
    value: bytes | None = None
    unwritable = False
    if isinstance(event, dict):
        try:
            value = envelope_bytes(ad_account_id, received_at_ms, published_form(event))
        except TypeError:  # orjson.JSONEncodeError: nested too deeply
            unwritable = True
    try:
        validate(event, received_at_ms=received_at_ms)
    except InvalidEvent as exc:
        return EventResult("failed", exc.message), None
    except Exception as exc:  # noqa: BLE001 - one broken event must not fail the call
        log.error("api_validator_crashed", error=type(exc).__name__, index=index)
        return EventResult("failed", "The event could not be validated."), None
    if unwritable:
        return EventResult("failed", TOO_DEEP), None
    if value is None:  # a validator must reject a non-object; never publish one
        return EventResult("failed", f"data[{index}] must be a JSON object."), None
    if len(value) > max_record_bytes:
        message = f"The event is too large (max {max_record_bytes} bytes)."
        return EventResult("failed", message), None
    return PROCESSED, value


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
