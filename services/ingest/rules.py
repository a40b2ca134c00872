"""Ingest's pure core: one ``conversions.raw`` record in, exactly one outcome out.

``process_raw(value, key, topic=..., partition=..., offset=..., timestamp_ms=...,
max_bytes=..., identifier_key=...)`` returns either :class:`Valid` (the
``conversions.valid`` message of docs/design.md, keyed by conversion_key) or :class:`Rejected` (the
``conversions.dlq`` record of the contract, keyed by ad_account_id or None); either
one's ``send`` is the record the agent sends, and a ``Valid``'s ``fact`` the setup
diagnostics' fact sent after it. It never raises, whatever the bytes.

Envelope rules (on top of the event rules of ``validation.py``):

- the value is a JSON object ``{"ad_account_id", "source", "received_at_ms",
  "event"}``; any other field is rejected (``unknown_envelope_field``) so that a
  typo such as ``recieved_at_ms`` cannot silently fall back to a default;
- ``ad_account_id``: digits only, 1 to 18 characters;
- ``source``: api, tag, topic or batch; missing or null means ``topic``;
- ``received_at_ms``: an integer (Unix ms); missing or null means the record's
  Kafka timestamp;
- the record key must be the UTF-8 bytes of ``ad_account_id``. A missing or
  different key is rejected (``key_mismatch``): ``conversions.raw`` is
  partitioned by ad account, and "the first accepted event wins" in dedupe is only
  defined when every event of one conversion_key arrives through one partition.

The DLQ record is built by the contract's one builder
(``shared.contract.dead_letters.dead_letter``), which redacts ``raw`` (an
allow-list, ``shared.contract.redaction``) and cuts it to ``MAX_RAW_CHARS``.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from services.ingest import validation as v
from shared.contract.dead_letters import REDACTED, UNPARSED, dead_letter
from shared.contract.diagnostic_facts import send_of_valid
from shared.contract.errors import InvalidEvent
from shared.contract.records import Send
from shared.values import value_class

__all__ = ["REDACTED", "Rejected", "Valid", "process_raw"]

# ---------------------------------------------------------------- reason codes
EMPTY_RECORD = "empty_record"
RECORD_TOO_LARGE = "record_too_large"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
UNKNOWN_ENVELOPE_FIELD = "unknown_envelope_field"
INVALID_AD_ACCOUNT_ID = "invalid_ad_account_id"
INVALID_SOURCE = "invalid_source"
INVALID_RECEIVED_AT = "invalid_received_at_ms"
MISSING_EVENT = "missing_event"
KEY_MISMATCH = "key_mismatch"
#: Safety net: a bug in this module turned into a DLQ record instead of a crash.
PROCESSING_ERROR = "processing_error"

ENVELOPE_REASONS: frozenset[str] = frozenset(
    {
        EMPTY_RECORD,
        RECORD_TOO_LARGE,
        INVALID_JSON,
        NOT_AN_OBJECT,
        UNKNOWN_ENVELOPE_FIELD,
        INVALID_AD_ACCOUNT_ID,
        INVALID_SOURCE,
        INVALID_RECEIVED_AT,
        MISSING_EVENT,
        KEY_MISMATCH,
        PROCESSING_ERROR,
    }
)
ALL_REASONS: frozenset[str] = ENVELOPE_REASONS | v.EVENT_REASONS

SOURCES: frozenset[str] = frozenset({"api", "tag", "topic", "batch"})
#: The counters' source of a record whose envelope does not say a usable one.
UNKNOWN_SOURCE = "unknown"
_ENVELOPE_FIELDS = frozenset({"ad_account_id", "source", "received_at_ms", "event"})
MAX_AD_ACCOUNT_ID_CHARS = 18


@value_class(frozen=True, slots=True)
class Valid:
    """An accepted event: send ``value`` to conversions.valid under ``key``."""

    key: bytes
    value: bytes
    message: dict[str, Any]
    source: str

    @property
    def send(self) -> Send:
        return Send("conversions.valid", self.key, self.value)

    @property
    def fact(self) -> Send:
        """The setup diagnostics' fact of this conversion, sent with it
        (``shared.contract.diagnostic_facts``)."""
        return send_of_valid(self.message)


@value_class(frozen=True, slots=True)
class Rejected:
    """A rejected record: send ``value`` to conversions.dlq under ``key`` (may be None)."""

    key: bytes | None
    value: bytes
    record: dict[str, Any]
    source: str

    @property
    def reason(self) -> str:
        return str(self.record["reason"])

    @property
    def send(self) -> Send:
        return Send("conversions.dlq", self.key, self.value)


def process_raw(
    value: bytes | None,
    key: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    max_bytes: int,
    identifier_key: str,
) -> Valid | Rejected:
    """Decode, validate and normalise one conversions.raw record. Never raises.

    ``identifier_key`` keys the message's ``ids.ip_ua`` (``CONVMESH_IDENTIFIER_KEY``).
    """
    try:
        return _process(
            value, key, topic, partition, offset, timestamp_ms, max_bytes, identifier_key
        )
    except Exception:  # noqa: BLE001 - the contract: every input yields one outcome
        return _reject(
            InvalidEvent(PROCESSING_ERROR, "The record could not be processed."),
            value,
            key,
            None,
            topic,
            partition,
            offset,
            max_bytes,
            UNKNOWN_SOURCE,
        )


def _is_account_id(value: Any) -> TypeGuard[str]:
    return (
        type(value) is str
        and 0 < len(value) <= MAX_AD_ACCOUNT_ID_CHARS
        and value.isascii()
        and value.isdigit()
    )


def _process(
    value: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    max_bytes: int,
    identifier_key: str,
) -> Valid | Rejected:
    envelope: Any = None
    source = UNKNOWN_SOURCE
    try:
        if value is None:
            raise InvalidEvent(EMPTY_RECORD, "The record has no value.")
        if len(value) > max_bytes:
            raise InvalidEvent(
                RECORD_TOO_LARGE, f"The record is {len(value)} bytes (max {max_bytes})."
            )
        try:
            envelope = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidEvent(INVALID_JSON, "The record is not valid UTF-8 JSON.") from None
        if type(envelope) is not dict:
            raise InvalidEvent(NOT_AN_OBJECT, "The record is not a JSON object.")
        for field in envelope:
            if field not in _ENVELOPE_FIELDS:
                raise InvalidEvent(
                    UNKNOWN_ENVELOPE_FIELD,
                    f"Unknown field {v._name(field)} in the envelope: expected ad_account_id,"
                    " source, received_at_ms and event.",
                )
        raw_source = envelope.get("source")
        if raw_source is None:
            source = "topic"
        elif type(raw_source) is str and raw_source in SOURCES:
            source = raw_source
        else:
            raise InvalidEvent(INVALID_SOURCE, "Field 'source' must be api, tag, topic or batch.")
        ad_account_id = envelope.get("ad_account_id")
        if not _is_account_id(ad_account_id):
            raise InvalidEvent(
                INVALID_AD_ACCOUNT_ID,
                "Field 'ad_account_id' must be a string of at most 18 digits.",
            )
        if key is None or key != ad_account_id.encode():
            raise InvalidEvent(
                KEY_MISMATCH, "The record key must be the ad_account_id of the envelope."
            )
        received_at_ms = envelope.get("received_at_ms")
        if received_at_ms is None:
            received_at_ms = timestamp_ms
        if type(received_at_ms) is not int or received_at_ms < 0:
            raise InvalidEvent(
                INVALID_RECEIVED_AT, "Field 'received_at_ms' must be an integer (Unix ms)."
            )
        event = envelope.get("event")
        if event is None:
            raise InvalidEvent(MISSING_EVENT, "Field 'event' is required.")
        normalised = v.validate_event(
            event, received_at_ms=received_at_ms, identifier_key=identifier_key
        )
    except InvalidEvent as exc:
        return _reject(exc, value, key, envelope, topic, partition, offset, max_bytes, source)

    conversion_key = normalised.conversion_key(ad_account_id)
    message = {
        "conversion_key": conversion_key,
        "ad_account_id": ad_account_id,
        "source": source,
        "received_at_ms": received_at_ms,
        "raw_ref": f"{topic}:{partition}:{offset}",
        "event_name": normalised.event_name,
        "event_id": normalised.event_id,
        "action_source": normalised.action_source,
        "event_time": normalised.event_time,
        "scope": normalised.scope,
        "value": normalised.value,
        "currency": normalised.currency,
        "ids": normalised.ids,
        "opt_out": normalised.opt_out,
        "ldp": normalised.ldp,
    }
    return Valid(
        key=conversion_key.encode("utf-8", "surrogatepass"),
        value=orjson.dumps(message),
        message=message,
        source=source,
    )


def _reject(
    exc: InvalidEvent,
    value: bytes | None,
    key: bytes | None,
    envelope: Any,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int,
    source: str,
) -> Rejected:
    account: str | None = None
    if type(envelope) is dict and _is_account_id(envelope.get("ad_account_id")):
        account = envelope["ad_account_id"]
    else:
        try:
            from_key = key.decode("ascii") if key is not None else None
        except (UnicodeDecodeError, AttributeError):
            from_key = None
        if _is_account_id(from_key):
            account = from_key
    record = dead_letter(
        exc.reason,
        exc.message,
        source_topic=topic,
        partition=partition,
        offset=offset,
        raw=value,
        ad_account_id=account,
        parsed=UNPARSED if envelope is None else envelope,
    )
    encoded = orjson.dumps(record)
    return Rejected(
        key=account.encode("ascii") if account else None,
        value=encoded,
        record=record,
        source=source,
    )
