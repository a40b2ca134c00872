"""Validation and normalisation of one Conversions API event (pure: no Faust, no I/O).

``validate_event(event, received_at_ms=..., identifier_key=...)`` applies the event rules of the
Conversions API (conversions-api.md) plus the contract's extra rules, and
returns a :class:`NormalisedEvent` or raises ``shared.contract.errors.InvalidEvent(reason,
message)``. The HTTP API returns ``message`` as the per-event ``error_message``;
the topic path writes ``reason`` and ``message`` to ``conversions.dlq``.

Messages never contain a plaintext identifier (no user_data value, and no field
*name* unless it looks like a field name). The first rule broken is reported.

Reason codes (stable; also listed in docs/reason-codes.md)
==========================================================

=============================  ==============================================================
reason                          when
=============================  ==============================================================
``event_not_object``            the event is not a JSON object
``unknown_field``               a field that the schema does not define (event, app_info,
                                device_info, custom_data or a contents[] item)
``missing_required_field``      event_name, action_source, event_time, event_id or user_data
                                is missing or null
``invalid_field_type``          a field has the wrong JSON type (string, bool, object, array,
                                integer) -- the message names the field and the type
``field_too_long``              a string longer than ``MAX_STRING_CHARS``
``too_many_items``              an array longer than its limit (``MAX_HASHES`` per hashed
                                field, ``MAX_ITEMS`` for contents / content_ids)
``invalid_event_name``          event_name not one of ``EVENT_NAMES``
``invalid_action_source``       action_source not one of ``ACTION_SOURCES``
``invalid_event_time``          event_time not an integer (a bool, a float, a string ...)
``event_time_in_milliseconds``  event_time looks like Unix milliseconds (>= 10**11)
``event_time_in_future``        event_time more than 1 hour after received_at_ms
``event_time_too_old``          event_time more than 67 days before received_at_ms
``invalid_event_id``            event_id empty, blank or longer than ``MAX_EVENT_ID_CHARS``
``identifier_in_event_id``      event_id is a plaintext email address or phone number (it
                                becomes part of the conversion key, which is logged and
                                published)
``missing_user_identifiers``    user_data holds none of: em; hashed_maids; both
                                client_ip_address and client_user_agent
``unhashed_identifier``         a hashed user_data field holds something other than a
                                64-character hex string (e.g. a plaintext email)
``invalid_client_ip_address``   client_ip_address is not IPv4 or IPv6 text
``invalid_value``               custom_data.value is not a string holding a finite decimal
``invalid_currency``            custom_data.currency is not three letters
=============================  ==============================================================
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from typing import Any

from shared.contract.errors import InvalidEvent
from shared.contract.keys import (
    conversion_key,
    internal_click,
    ip_ua_hash,
    keyed_ip_ua,
    scope_of,
)
from shared.contract.limits import MAX_EVENT_AGE_MS, MAX_FUTURE_MS
from shared.values import value_class

# ---------------------------------------------------------------- reason codes
EVENT_NOT_OBJECT = "event_not_object"
UNKNOWN_FIELD = "unknown_field"
MISSING_REQUIRED_FIELD = "missing_required_field"
INVALID_FIELD_TYPE = "invalid_field_type"
FIELD_TOO_LONG = "field_too_long"
TOO_MANY_ITEMS = "too_many_items"
INVALID_EVENT_NAME = "invalid_event_name"
INVALID_ACTION_SOURCE = "invalid_action_source"
INVALID_EVENT_TIME = "invalid_event_time"
EVENT_TIME_IN_MILLISECONDS = "event_time_in_milliseconds"
EVENT_TIME_IN_FUTURE = "event_time_in_future"
EVENT_TIME_TOO_OLD = "event_time_too_old"
INVALID_EVENT_ID = "invalid_event_id"
IDENTIFIER_IN_EVENT_ID = "identifier_in_event_id"
MISSING_USER_IDENTIFIERS = "missing_user_identifiers"
UNHASHED_IDENTIFIER = "unhashed_identifier"
INVALID_CLIENT_IP_ADDRESS = "invalid_client_ip_address"
INVALID_VALUE = "invalid_value"
INVALID_CURRENCY = "invalid_currency"

EVENT_REASONS: frozenset[str] = frozenset(
    {
        EVENT_NOT_OBJECT,
        UNKNOWN_FIELD,
        MISSING_REQUIRED_FIELD,
        INVALID_FIELD_TYPE,
        FIELD_TOO_LONG,
        TOO_MANY_ITEMS,
        INVALID_EVENT_NAME,
        INVALID_ACTION_SOURCE,
        INVALID_EVENT_TIME,
        EVENT_TIME_IN_MILLISECONDS,
        EVENT_TIME_IN_FUTURE,
        EVENT_TIME_TOO_OLD,
        INVALID_EVENT_ID,
        IDENTIFIER_IN_EVENT_ID,
        MISSING_USER_IDENTIFIERS,
        UNHASHED_IDENTIFIER,
        INVALID_CLIENT_IP_ADDRESS,
        INVALID_VALUE,
        INVALID_CURRENCY,
    }
)

# ---------------------------------------------------------------- limits
MAX_EVENT_ID_CHARS = 256
MAX_STRING_CHARS = 8_192
MAX_HASHES = 100
MAX_ITEMS = 1_000
#: event_time at or above this is taken for milliseconds (year 5138 in seconds).
MS_THRESHOLD = 10**11
MAX_AGE_MS = MAX_EVENT_AGE_MS
MAX_VALUE_CHARS = 40
#: Longest string of an app_info / device_info field (but its user agent).
MAX_INFO_CHARS = 256
#: Most items of an app_info / device_info array (device_info.languages).
MAX_INFO_ITEMS = 100

# ---------------------------------------------------------------- schema
EVENT_NAMES: frozenset[str] = frozenset(
    {
        "add_payment_info",
        "add_to_cart",
        "add_to_wishlist",
        "app_install",
        "app_open",
        "checkout",
        "contact",
        "custom",
        "customize_product",
        "find_location",
        "initiate_checkout",
        "lead",
        "page_visit",
        "schedule",
        "search",
        "signup",
        "start_trial",
        "submit_application",
        "subscribe",
        "view_category",
        "view_content",
        "watch_video",
    }
)
ACTION_SOURCES: frozenset[str] = frozenset({"app_android", "app_ios", "web", "offline"})

_REQUIRED = ("event_name", "action_source", "event_time", "event_id", "user_data")
_EVENT_STRINGS = frozenset(
    {
        "event_source_url",
        "partner_name",
        "language",
        "app_id",
        "app_name",
        "app_version",
        "device_brand",
        "device_carrier",
        "device_model",
        "device_type",
        "os_version",
    }
)
_EVENT_BOOLS = frozenset({"opt_out", "wifi"})
#: app_info / device_info: what each field may hold. The fields of Pinterest's
#: structured forms (ConversionEventAppInfo / ConversionEventDeviceInfo in its v5
#: OpenAPI, which forbids other fields) and, as before, the flat fields' own names.
#: Kinds: "string" (at most MAX_INFO_CHARS), "user_agent" (at most MAX_STRING_CHARS),
#: "integer", "bool", "strings" (an array of at most MAX_INFO_ITEMS such strings).
#: No nested objects: a free-form object would carry anything, identifiers included.
INFO_FIELDS: dict[str, dict[str, str]] = {
    "app_info": {
        **dict.fromkeys(
            ("app_id", "app_name", "app_package_name", "app_store", "app_version"), "string"
        ),
        "user_agent": "user_agent",
        **dict.fromkeys(("install_time", "window_height", "window_width"), "integer"),
    },
    "device_info": {
        **dict.fromkeys(
            (
                "brand",
                "carrier",
                "form_factor",
                "kernel_version",
                "locale",
                "model",
                "network_type",
                "os_family",
                "os_name",
                "os_release_name",
                "os_version",
                "timezone",
                "timezone_abbr",
                "type",
                "device_brand",
                "device_carrier",
                "device_model",
                "device_type",
            ),
            "string",
        ),
        **dict.fromkeys(
            (
                "battery_level",
                "cpu_cores",
                "external_storage_free_space",
                "external_storage_size",
                "screen_density",
                "screen_height",
                "screen_width",
                "storage_free_space",
                "storage_size",
            ),
            "integer",
        ),
        "languages": "strings",
        "wifi": "bool",
    },
}
_EVENT_CORE = frozenset({*_REQUIRED, "custom_data"})

#: user_data fields holding arrays of SHA-256 hex strings.
HASHED_FIELDS: frozenset[str] = frozenset(
    {"em", "ph", "ge", "db", "ln", "fn", "ct", "st", "zp", "country", "external_id", "hashed_maids"}
)
#: plaintext user_data fields (strings or null).
_USER_STRINGS = frozenset({"client_ip_address", "client_user_agent", "click_id", "partner_id"})

_CUSTOM_STRINGS = frozenset(
    {
        "currency",
        "value",
        "content_name",
        "content_category",
        "content_brand",
        "order_id",
        "search_string",
        "opt_out_type",
        "np",
        "predicted_ltv",
        "external_measurement_id",
    }
)
#: A string, or an integer as Pinterest's v5 schema has typed it since 2025.
_VENDOR_ID = "external_measurement_vendor_id"
_CUSTOM_FIELDS = frozenset({*_CUSTOM_STRINGS, _VENDOR_ID, "content_ids", "contents", "num_items"})
_CONTENT_STRINGS = frozenset({"id", "item_price", "item_name", "item_category", "item_brand"})
_CONTENT_FIELDS = frozenset({*_CONTENT_STRINGS, "quantity"})

_HEX64 = re.compile(r"[0-9a-fA-F]{64}").fullmatch
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)").fullmatch
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}").fullmatch
#: local@domain.tld, in any script, also percent-encoded ("%40").
_EMAIL = re.compile(r"[^@\s]+(?:@|%40)[^@\s.]+(?:\.[^@\s.]+)+", re.IGNORECASE).search
#: A phone number as people write one: E.164 ("+14155550100", "+1 415 555 0100") or
#: with separators ("(415) 555-0100", "415.555.0100"). A bare run of digits is not
#: taken for one: numeric order numbers are common event ids.
_E164 = re.compile(r"\+[0-9][0-9 ().-]{5,22}[0-9]").fullmatch
_SEPARATED_PHONE = re.compile(
    r"\(?[0-9]{2,4}\)?[ .-]?[0-9]{3,4}[ .-][0-9]{3,5}|\([0-9]{2,4}\)[0-9]{6,9}"
).fullmatch
_ip_address = ipaddress.ip_address
_sha256 = hashlib.sha256


@value_class(frozen=True, slots=True)
class NormalisedEvent:
    """A valid event, normalised; carries no plaintext identifier."""

    event_name: str
    event_id: str
    action_source: str
    event_time: int
    #: "offline" for action_source "offline", else "online".
    scope: str
    value: float | None
    currency: str | None
    #: {"click_id", "external_id", "em", "ph", "hashed_maids", "ip_ua"} (docs/design.md)
    ids: dict[str, Any]
    opt_out: bool
    ldp: bool

    def conversion_key(self, ad_account_id: str) -> str:
        return conversion_key(ad_account_id, self.event_name, self.event_id, self.scope)


# ---------------------------------------------------------------- helpers
def _name(field: str) -> str:
    """A field name fit for a message: never echo something that is not a plain name."""
    return f"'{field}'" if _FIELD_NAME(field) else "a field"


def _unknown(field: Any, where: str) -> InvalidEvent:
    name = _name(field) if isinstance(field, str) else "a field"
    return InvalidEvent(UNKNOWN_FIELD, f"Unknown field {name} in {where}.")


def _type_error(path: str, expected: str) -> InvalidEvent:
    return InvalidEvent(INVALID_FIELD_TYPE, f"Field '{path}' must be {expected}.")


def _check_string(value: Any, path: str, limit: int = MAX_STRING_CHARS) -> None:
    if type(value) is not str:
        raise _type_error(path, "a string or null")
    if len(value) > limit:
        raise InvalidEvent(FIELD_TOO_LONG, f"Field '{path}' is longer than {limit} characters.")


def _check_int(value: Any, path: str) -> None:
    if type(value) is not int:  # bool is not int here
        raise _type_error(path, "an integer or null")


def _unhashed(path: str) -> InvalidEvent:
    return InvalidEvent(
        UNHASHED_IDENTIFIER,
        f"Field '{path}' must be hashed: send the SHA-256 of the normalised value as 64"
        " hexadecimal characters, never the plaintext.",
    )


def _hashes(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if type(value) is str and _HEX64(value) is None:
        # One plaintext value where an array was due ("em": "alice@example.com"): the
        # message says what matters most, that it must be hashed.
        raise _unhashed(f"user_data.{field}")
    if type(value) is not list:
        raise _type_error(f"user_data.{field}", "an array of SHA-256 hashes (64 hex characters)")
    if len(value) > MAX_HASHES:
        raise InvalidEvent(
            TOO_MANY_ITEMS, f"Field 'user_data.{field}' has more than {MAX_HASHES} values."
        )
    out: list[str] = []
    for index, item in enumerate(value):
        if type(item) is not str or _HEX64(item) is None:
            raise _unhashed(f"user_data.{field}[{index}]")
        item = item.lower()
        if item not in out:
            out.append(item)
    return out


# ---------------------------------------------------------------- the rules
def validate_event(
    event: object, *, received_at_ms: int, identifier_key: str | None = None
) -> NormalisedEvent:
    """Validate one Conversions API event and normalise it.

    ``received_at_ms`` is when the event reached us (Unix ms): event_time must lie
    within [received_at - 67 days, received_at + 1 hour]. Raises
    ``InvalidEvent(reason, message)`` with a reason code of this module.

    ``ids.ip_ua`` is the keyed form ``keyed_ip_ua(ip_ua_hash(ip, ua), identifier_key)``
    (``CONVMESH_IDENTIFIER_KEY``): the plain hash never enters the pipeline. Without a
    key (``None``: the HTTP API, which only checks events and publishes them as
    received) ``ids.ip_ua`` is None; the ingest agent always passes one.
    ``ids.click_id`` likewise is ``internal_click(click_id, identifier_key)``:
    no plaintext click id enters the pipeline either.
    """
    if type(event) is not dict:
        raise InvalidEvent(EVENT_NOT_OBJECT, "The event must be a JSON object.")

    for field in _REQUIRED:
        if event.get(field) is None:
            raise InvalidEvent(MISSING_REQUIRED_FIELD, f"Field '{field}' is required.")

    opt_out = False
    for field, val in event.items():
        if field in _EVENT_CORE:
            continue
        if field in _EVENT_STRINGS:
            if val is not None:
                _check_string(val, field)
        elif field in _EVENT_BOOLS:
            if val is not None and val is not True and val is not False:
                raise _type_error(field, "true, false or null")
            if field == "opt_out":
                opt_out = val is True
        elif field in INFO_FIELDS:
            if val is not None:
                _info(val, field)
        else:
            raise _unknown(field, "the event")

    event_name = event["event_name"]
    if type(event_name) is not str or event_name not in EVENT_NAMES:
        raise InvalidEvent(
            INVALID_EVENT_NAME,
            "Field 'event_name' must be one of: " + ", ".join(sorted(EVENT_NAMES)) + ".",
        )
    action_source = event["action_source"]
    if type(action_source) is not str or action_source not in ACTION_SOURCES:
        raise InvalidEvent(
            INVALID_ACTION_SOURCE,
            "Field 'action_source' must be one of: app_android, app_ios, offline, web.",
        )

    event_time = event["event_time"]
    if type(event_time) is not int:
        raise InvalidEvent(
            INVALID_EVENT_TIME,
            "Field 'event_time' must be an integer: the Unix time of the event in seconds.",
        )
    if event_time >= MS_THRESHOLD:
        raise InvalidEvent(
            EVENT_TIME_IN_MILLISECONDS,
            "Field 'event_time' looks like milliseconds: send the Unix time in seconds.",
        )
    event_ms = event_time * 1000
    if event_ms > received_at_ms + MAX_FUTURE_MS:
        raise InvalidEvent(
            EVENT_TIME_IN_FUTURE, "Field 'event_time' is more than 1 hour in the future."
        )
    if received_at_ms - event_ms > MAX_AGE_MS:
        raise InvalidEvent(EVENT_TIME_TOO_OLD, "Field 'event_time' is more than 67 days old.")

    event_id = event["event_id"]
    if type(event_id) is not str:
        raise _type_error("event_id", "a string")
    if not event_id or event_id.isspace():
        raise InvalidEvent(INVALID_EVENT_ID, "Field 'event_id' must not be empty.")
    if len(event_id) > MAX_EVENT_ID_CHARS:
        raise InvalidEvent(
            INVALID_EVENT_ID, f"Field 'event_id' is longer than {MAX_EVENT_ID_CHARS} characters."
        )
    if is_plaintext_identifier(event_id):
        raise InvalidEvent(
            IDENTIFIER_IN_EVENT_ID,
            "Field 'event_id' must not be an email address or a phone number: it is part of"
            " the deduplication key, which is logged and published. Use an order or event"
            " number.",
        )

    ids = _user_data(event["user_data"], identifier_key)
    value, currency, ldp = _custom_data(event.get("custom_data"))

    return NormalisedEvent(
        event_name=event_name,
        event_id=event_id,
        action_source=action_source,
        event_time=event_time,
        scope=scope_of(action_source),
        value=value,
        currency=currency,
        ids=ids,
        opt_out=opt_out,
        ldp=ldp,
    )


def is_plaintext_identifier(text: str) -> bool:
    """Whether ``text`` holds an email address or is written like a phone number."""
    if ("@" in text or "%40" in text) and _EMAIL(text):
        return True
    stripped = text.strip()
    return bool(_E164(stripped) or _SEPARATED_PHONE(stripped))


def _info(value: Any, field: str) -> None:
    """app_info / device_info: an object of known fields (INFO_FIELDS), each of its kind."""
    if type(value) is not dict:
        raise _type_error(field, "an object or null")
    kinds = INFO_FIELDS[field]
    for name, item in value.items():
        kind = kinds.get(name)
        if kind is None:
            raise _unknown(name, field)
        if item is not None:
            _info_item(item, kind, f"{field}.{name}")


def _info_item(item: Any, kind: str, path: str) -> None:
    if kind == "bool":
        if item is not True and item is not False:
            raise _type_error(path, "true, false or null")
    elif kind == "integer":
        _check_int(item, path)
    elif kind == "strings":
        if type(item) is not list:
            raise _type_error(path, "an array of strings or null")
        if len(item) > MAX_INFO_ITEMS:
            raise InvalidEvent(
                FIELD_TOO_LONG, f"Field '{path}' has more than {MAX_INFO_ITEMS} items."
            )
        for index, text in enumerate(item):
            _check_string(text, f"{path}[{index}]", MAX_INFO_CHARS)
    else:
        _check_string(item, path, MAX_STRING_CHARS if kind == "user_agent" else MAX_INFO_CHARS)


#: The user_data fields this API reads; others are ignored and never published.
USER_DATA_FIELDS: frozenset[str] = HASHED_FIELDS | _USER_STRINGS


def published_form(event: Any) -> Any:
    """The event as the API publishes it: without the user_data fields it does not
    read, which could hold anything, identifiers in the clear included."""
    if type(event) is not dict:
        return event
    user_data = event.get("user_data")
    if type(user_data) is not dict or all(f in USER_DATA_FIELDS for f in user_data):
        return event
    kept = {f: v for f, v in user_data.items() if f in USER_DATA_FIELDS}
    return {**event, "user_data": kept}


def _user_data(user_data: Any, identifier_key: str | None) -> dict[str, Any]:
    if type(user_data) is not dict:
        raise _type_error("user_data", "an object")
    hashes: dict[str, list[str]] = {}
    for field, val in user_data.items():
        if field in HASHED_FIELDS:
            hashes[field] = _hashes(val, field)
        elif field in _USER_STRINGS:
            if val is not None:
                _check_string(val, f"user_data.{field}")
        # Any other field is let through, as the spec's schema does (it forbids other
        # fields on the body, the event, custom_data and contents[] only), and then
        # ignored: the API publishes the event without it (``published_form``).

    # Both are strings or None here (checked above).
    ip: str | None = user_data.get("client_ip_address")
    ua: str | None = user_data.get("client_user_agent")
    if ip is not None:
        try:
            _ip_address(ip)
        except ValueError:
            raise InvalidEvent(
                INVALID_CLIENT_IP_ADDRESS,
                "Field 'user_data.client_ip_address' must be an IPv4 or IPv6 address.",
            ) from None
    has_ip_ua = bool(ip and ua)

    em = hashes.get("em", [])
    maids = hashes.get("hashed_maids", [])
    if not em and not maids and not has_ip_ua:
        raise InvalidEvent(
            MISSING_USER_IDENTIFIERS,
            "Field 'user_data' must contain at least one of: em; hashed_maids; both"
            " client_ip_address and client_user_agent.",
        )
    return {
        "click_id": _internal_click(user_data.get("click_id"), identifier_key),
        "external_id": hashes.get("external_id", []),
        "em": em,
        "ph": hashes.get("ph", []),
        "hashed_maids": maids,
        "ip_ua": _keyed_ip_ua(ip, ua, identifier_key) if ip and ua else None,
    }


def _internal_click(click_id: str | None, key: str | None) -> str | None:
    """The pipeline's click id (keyed); None without one, or when the caller only
    checks the event."""
    return internal_click(click_id, key) if click_id and key else None


def _keyed_ip_ua(ip: str, ua: str, key: str | None) -> str | None:
    """The pipeline's ip_ua (keyed); None when the caller only checks the event."""
    return keyed_ip_ua(ip_ua_hash(ip, ua), key) if key else None


def _custom_data(custom: Any) -> tuple[float | None, str | None, bool]:
    if custom is None:
        return None, None, False
    if type(custom) is not dict:
        raise _type_error("custom_data", "an object or null")
    for field, val in custom.items():
        if val is None:
            if field not in _CUSTOM_FIELDS:
                raise _unknown(field, "custom_data")
            continue
        if field == "value" and type(val) is not str:
            raise InvalidEvent(
                INVALID_VALUE,
                "Field 'custom_data.value' must be a string holding a decimal number,"
                ' like "72.39", not a JSON number.',
            )
        if field == "currency" and type(val) is not str:
            raise InvalidEvent(
                INVALID_CURRENCY,
                "Field 'custom_data.currency' must be a three-letter ISO-4217 code, like USD.",
            )
        if field in _CUSTOM_STRINGS:
            _check_string(val, f"custom_data.{field}")
        elif field == "num_items":
            _check_int(val, "custom_data.num_items")
        elif field == _VENDOR_ID:
            if type(val) is str:
                _check_string(val, f"custom_data.{field}")
            elif type(val) is not int:  # bool is not int here
                raise _type_error(f"custom_data.{field}", "a string, an integer or null")
        elif field == "content_ids":
            if type(val) is not list:
                raise _type_error("custom_data.content_ids", "an array of strings or null")
            if len(val) > MAX_ITEMS:
                raise InvalidEvent(
                    TOO_MANY_ITEMS,
                    f"Field 'custom_data.content_ids' has more than {MAX_ITEMS} ids.",
                )
            for index, item in enumerate(val):
                _check_string(item, f"custom_data.content_ids[{index}]")
        elif field == "contents":
            _contents(val)
        else:
            raise _unknown(field, "custom_data")

    value: float | None = None
    raw_value = custom.get("value")
    if raw_value is not None:
        if len(raw_value) > MAX_VALUE_CHARS or _DECIMAL(raw_value) is None:
            raise InvalidEvent(
                INVALID_VALUE,
                "Field 'custom_data.value' must be a string holding a decimal number,"
                ' like "72.39".',
            )
        value = float(raw_value)
        if not math.isfinite(value):
            raise InvalidEvent(INVALID_VALUE, "Field 'custom_data.value' must be a finite number.")

    currency = custom.get("currency")
    if currency is not None:
        if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
            raise InvalidEvent(
                INVALID_CURRENCY,
                "Field 'custom_data.currency' must be a three-letter ISO-4217 code, like USD.",
            )
        currency = currency.upper()

    ldp = False
    opt_out_type = custom.get("opt_out_type")
    if opt_out_type:
        ldp = any(part.strip().upper() == "LDP" for part in opt_out_type.split(","))
    return value, currency, ldp


def _contents(contents: Any) -> None:
    if type(contents) is not list:
        raise _type_error("custom_data.contents", "an array of objects or null")
    if len(contents) > MAX_ITEMS:
        raise InvalidEvent(
            TOO_MANY_ITEMS, f"Field 'custom_data.contents' has more than {MAX_ITEMS} items."
        )
    for index, item in enumerate(contents):
        path = f"custom_data.contents[{index}]"
        if type(item) is not dict:
            raise _type_error(path, "an object")
        for field, val in item.items():
            if field in _CONTENT_STRINGS:
                if val is not None:
                    _check_string(val, f"{path}.{field}")
            elif field == "quantity":
                if val is not None:
                    _check_int(val, f"{path}.quantity")
            else:
                raise _unknown(field, f"{path}")
