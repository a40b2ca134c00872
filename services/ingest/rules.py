"""Ingest's pure core: one ``conversions.raw`` record in, exactly one outcome out.

``process_raw(value, key, topic=..., partition=..., offset=..., timestamp_ms=...,
max_bytes=...)`` returns either :class:`Valid` (the ``conversions.valid`` message of
docs/design.md, keyed by conversion_key) or :class:`Rejected` (the
``conversions.dlq`` record of the contract, keyed by ad_account_id or None); either
one's ``send`` is the record the agent sends. It never raises, whatever the bytes.

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

The DLQ ``raw`` field is the input as text with plaintext identifiers redacted
(see :func:`redact_raw`) and truncated to ``MAX_RAW_CHARS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from services.ingest import validation as v
from shared.contract.errors import InvalidEvent
from shared.contract.records import Send

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
#: The DLQ ``raw`` text is cut to this many characters.
MAX_RAW_CHARS = 16_384
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Valid:
    """An accepted event: send ``value`` to conversions.valid under ``key``."""

    key: bytes
    value: bytes
    message: dict[str, Any]
    source: str

    @property
    def send(self) -> Send:
        return Send("conversions.valid", self.key, self.value)


@dataclass(frozen=True, slots=True)
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
) -> Valid | Rejected:
    """Decode, validate and normalise one conversions.raw record. Never raises."""
    try:
        return _process(value, key, topic, partition, offset, timestamp_ms, max_bytes)
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
        normalised = v.validate_event(event, received_at_ms=received_at_ms)
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
    record = {
        "reason": exc.reason,
        "message": exc.message,
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "ad_account_id": account,
        "raw": redact_raw(value, envelope),
    }
    try:
        encoded = orjson.dumps(record)
    except (TypeError, orjson.JSONEncodeError):  # pragma: no cover - record is plain JSON
        record["raw"] = REDACTED
        encoded = orjson.dumps(record)
    return Rejected(
        key=account.encode("ascii") if account else None,
        value=encoded,
        record=record,
        source=source,
    )


# ---------------------------------------------------------------- redaction
_SECRET_KEYS = frozenset({"client_ip_address", "client_user_agent"})
#: user_data fields that are kept as they are in the DLQ (not personal plaintext).
_USER_KEEP = frozenset({"click_id", "partner_id"})
#: Keys whose digit strings / large integers are ids or times, not phone numbers.
_NUMERIC_OK = frozenset(
    {
        "ad_account_id",
        "event_id",
        "event_time",
        "received_at_ms",
        "order_id",
        "id",
        "content_ids",
        "value",
        "item_price",
        "predicted_ltv",
        "quantity",
        "num_items",
        "app_id",
        "app_version",
        "os_version",
        "external_measurement_id",
        "external_measurement_vendor_id",
        "np",
        "partner_id",
        "partner_name",
        "click_id",
    }
)
_EMAIL = re.compile(r"[\w.+%-]+(?:@|%40)[\w-]+(?:\.[\w-]+)*", re.ASCII)
_PHONE = re.compile(r"\+?\(?\d[\d ().-]{5,24}\d")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_TEXT_SECRET = re.compile(
    r'"(client_ip_address|client_user_agent)"\s*:\s*(?:"(?:[^"\\]|\\.)*(?:"|\\?$)|[^,}\]]*)'
)
_HASHED_NAMES = "|".join(sorted(v.HASHED_FIELDS))
_TEXT_HASHED = re.compile(
    rf'"({_HASHED_NAMES})"\s*:\s*(\[[^\]]*(?:\]|$)|"(?:[^"\\]|\\.)*(?:"|\\?$)|[^,}}\]]*)'
)
_TEXT_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?$)')
_TEXT_QUOTED_PHONE = re.compile(r'"\+?[\d ().-]{9,30}"')
_ID_KEY_BEFORE = re.compile(r'"(?:ad_account_id|event_id|order_id|id)"\s*:\s*\[?\s*$')


def _phone_sub(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if digits >= 10 or (digits >= 7 and text[0] == "+"):
        return REDACTED
    return text


def _phone_sub_text(match: re.Match[str]) -> str:
    # In unparsed text a bare run of digits is as likely a timestamp: only numbers
    # written like phone numbers (leading +, or separators) are taken for phones.
    text = match.group(0)
    if text.isdigit():
        return text
    return _phone_sub(match)


def _redact_string(text: str, in_text: bool = False) -> str:
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(REDACTED, text)
    text = _IPV4.sub(REDACTED, text)
    if text.count(":") >= 2:
        text = _IPV6.sub(_ipv6_sub, text)
    return _PHONE.sub(_phone_sub_text if in_text else _phone_sub, text)


def _ipv6_sub(match: re.Match[str]) -> str:
    text = match.group(0)
    return REDACTED if "::" in text or text.count(":") >= 4 else text


def _redact(obj: Any, key: str | None, in_user_data: bool) -> Any:
    if obj is None or obj is True or obj is False:
        return obj
    if key is not None:
        if key in _SECRET_KEYS:
            return REDACTED
        if key in v.HASHED_FIELDS:
            if type(obj) is list:
                return [item if type(item) is str and v._HEX64(item) else REDACTED for item in obj]
            return obj if type(obj) is str and v._HEX64(obj) else REDACTED
        if in_user_data and key not in _USER_KEEP:
            # An unknown user_data field: whatever it holds is about a person.
            return REDACTED
    if type(obj) is dict:
        child_in_user = key == "user_data"
        out: dict[str, Any] = {}
        for k, val in obj.items():
            safe_k = _redact_string(k) if k not in _NUMERIC_OK else k
            out[safe_k] = _redact(val, k, child_in_user)
        return out
    if type(obj) is list:
        return [_redact(item, key, in_user_data) for item in obj]
    if type(obj) is str:
        if key in _NUMERIC_OK:
            return _EMAIL.sub(REDACTED, obj) if "@" in obj else obj
        return _redact_string(obj)
    if type(obj) is int and key not in _NUMERIC_OK and 10**6 <= abs(obj) < 10**15:
        return REDACTED
    return obj


def _hash_literal(literal: str) -> bool:
    return len(literal) == 66 and v._HEX64(literal[1:-1]) is not None


def _redact_hashed_text(match: re.Match[str]) -> str:
    name, body = match.group(1), match.group(2)
    if body.startswith("["):
        literals = _TEXT_STRING.findall(body)
        kept = [lit if _hash_literal(lit) else f'"{REDACTED}"' for lit in literals]
        if _TEXT_STRING.sub("", body).strip("[], \t\r\n"):
            kept.append(f'"{REDACTED}"')  # bare numbers or junk in the array
        return f'"{name}": [{", ".join(kept)}]'
    if body.startswith('"') and _hash_literal(body):
        return match.group(0)
    return f'"{name}": "{REDACTED}"'


def _redact_quoted_phone(match: re.Match[str]) -> str:
    literal = match.group(0)
    if sum(c.isdigit() for c in literal) < 10:
        return literal
    start = match.start()
    if _ID_KEY_BEFORE.search(match.string, max(0, start - 48), start):
        return literal
    return f'"{REDACTED}"'


def _redact_text(text: str) -> str:
    """Redaction of text that is not JSON (or too large to parse): pattern based."""
    text = _TEXT_SECRET.sub(lambda m: f'"{m.group(1)}": "{REDACTED}"', text)
    text = _TEXT_HASHED.sub(_redact_hashed_text, text)
    text = _TEXT_QUOTED_PHONE.sub(_redact_quoted_phone, text)
    return _redact_string(text, in_text=True)


def redact_raw(value: bytes | None, parsed: Any = None) -> str:
    """The input as text for the DLQ, plaintext identifiers replaced by ``[redacted]``.

    ``parsed`` is the already decoded JSON value when there is one: it is redacted
    structurally (client_ip_address / client_user_agent, non-hash values of hashed
    fields, unknown user_data fields, emails, phone numbers and IP addresses
    anywhere). Otherwise (not JSON, not UTF-8, too large) the bytes are decoded
    with backslash escapes and redacted by pattern. Cut to ``MAX_RAW_CHARS``.
    """
    if value is None:
        return ""
    if parsed is not None:
        try:
            text = orjson.dumps(_redact(parsed, None, False)).decode("utf-8")
        except (TypeError, RecursionError, orjson.JSONEncodeError):
            text = None
        if text is not None:
            return _truncate(text, len(value))
    head = bytes(value[: MAX_RAW_CHARS * 4 + 1_024])
    text = _redact_text(head.decode("utf-8", "backslashreplace"))
    return _truncate(text, len(value), cut=len(head) < len(value))


def _truncate(text: str, total_bytes: int, cut: bool = False) -> str:
    if len(text) <= MAX_RAW_CHARS and not cut:
        return text
    return text[:MAX_RAW_CHARS] + f"...[truncated, {total_bytes} bytes]"
