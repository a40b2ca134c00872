"""Redaction of a rejected input for the DLQ ``raw`` field: an allow-list.

``conversions.dlq`` keeps records for 30 days and is read by operators, so
``raw`` must hold no plaintext identifier of any kind. Rather than look for
identifiers (emails, phones, addresses, user agents, user ids, click ids ...)
and miss the next unusual one, redaction keeps only what it knows to be safe
and replaces everything else by ``"[redacted]"``:

* a string is kept when its field is one of the non-identifying fields of
  ``_STRING_FIELDS`` (event_name, ad_account_id, currency, campaign ids ...)
  and it passes that field's pattern (strict ASCII shapes that no email, phone
  number, IP address or user agent fits), or when it is a 64-hex hash;
* a number is kept only in a numeric field of ``_NUMBER_FIELDS`` (times,
  counts, versions); ``true``, ``false`` and ``null`` are always kept;
* a field *name* is kept when it is a known field or a plain short name
  (letters, ``_``, few digits); any other name is itself redacted.

Text that is not JSON (not UTF-8, truncated, too large to parse) is redacted
token by token with the same rules: string literals are decoded (JSON escapes
such as ``"client_user_agen\\u0074"``) before their field is looked up, every
literal that is not an allow-listed value or a hash is replaced, and every bare
word outside a literal is replaced too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

REDACTED: Final = "[redacted]"
#: The DLQ ``raw`` text is cut to this many characters (then a truncation note).
MAX_RAW_CHARS: Final = 16_384
#: Deeper JSON than this is redacted whole (and keeps recursion bounded).
MAX_DEPTH: Final = 32
#: How much of an unparsed value is looked at (a UTF-8 character is up to 4 bytes).
_TEXT_HEAD_BYTES: Final = MAX_RAW_CHARS * 4 + 1_024


class _Unparsed:
    """Marks "the caller has not parsed the value" (JSON ``null`` parses to None)."""


UNPARSED: Final = _Unparsed()

_HEX64 = re.compile(r"[0-9a-fA-F]{64}").fullmatch
_ENUM = re.compile(r"[a-z][a-z0-9_]{0,39}").fullmatch
_DIGITS = re.compile(r"[0-9]{1,18}").fullmatch
#: Opaque ids: no ``@``, no ``+``, no ``:``, no spaces (so no email, E.164 phone,
#: IPv6 address or user agent); dotted quads and separated phone shapes are
#: excluded below. A bare run of digits is kept: it is how ad and order ids look.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}").fullmatch
_DECIMAL = re.compile(r"[+-]?[0-9]{1,15}(?:\.[0-9]{0,9})?").fullmatch
_CURRENCY = re.compile(r"[A-Za-z]{3}").fullmatch
_OPT_OUT_TYPE = re.compile(r"[A-Za-z_, ]{1,40}").fullmatch
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").fullmatch
#: Names and versions of apps and devices: one word, few digits.
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,-]{0,63}").fullmatch
_RAW_REF = re.compile(r"[A-Za-z0-9_.-]{1,249}:[0-9]{1,10}:[0-9]{1,19}").fullmatch
_CONVERSION_KEY = re.compile(r"([0-9]{1,18}):([a-z_]{1,40}):(.+):(online|offline)").fullmatch
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}").search
_SEPARATED_PHONE = re.compile(r"[0-9]{2,4}[.-][0-9]{3,4}[.-][0-9]{3,4}").search
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}").fullmatch
_MAX_NAME_DIGITS = 4
_MAX_LABEL_DIGITS = 6


def _few_digits(text: str, limit: int) -> bool:
    return sum(c.isdigit() for c in text) <= limit


def _is_id(text: str) -> bool:
    return bool(_ID(text)) and not _DOTTED_QUAD(text) and not _SEPARATED_PHONE(text)


def _is_label(text: str) -> bool:
    return bool(_LABEL(text)) and _few_digits(text, _MAX_LABEL_DIGITS)


def _is_conversion_key(text: str) -> bool:
    match = _CONVERSION_KEY(text)
    return match is not None and _is_id(match.group(3))


def _matches(pattern: Callable[[str], object]) -> Callable[[str], bool]:
    return lambda text: bool(pattern(text))


_ENUM_FIELDS = (
    "event_name action_source source scope op kind type key_type status"
    " unidentified_reason reason attribution_type device_type"
)
_ID_FIELDS = (
    "event_id engagement_id request_id campaign_id ad_group_id ad_id order_id content_ids id app_id"
)
_LABEL_FIELDS = (
    "language app_name app_version os_name os_version device_brand device_model device_carrier"
)
#: field -> the check a string value of that field must pass to be kept.
_STRING_FIELDS: dict[str, Callable[[str], bool]] = {
    **dict.fromkeys(_ENUM_FIELDS.split(), _matches(_ENUM)),
    **dict.fromkeys(_ID_FIELDS.split(), _is_id),
    **dict.fromkeys(_LABEL_FIELDS.split(), _is_label),
    **dict.fromkeys(("value", "item_price", "predicted_ltv"), _matches(_DECIMAL)),
    "ad_account_id": _matches(_DIGITS),
    "currency": _matches(_CURRENCY),
    "opt_out_type": _matches(_OPT_OUT_TYPE),
    "date": _matches(_DATE),
    "raw_ref": _matches(_RAW_REF),
    "conversion_key": _is_conversion_key,
}
#: Fields whose numbers are times, counts, amounts or versions, never identifiers.
_NUMBER_FIELDS = frozenset(
    (
        "event_time ts_ms received_at_ms created_at_ms processed_at_ms original_event_time"
        " num_items quantity value item_price predicted_ltv mv version seq order"
        " partition offset count screen_width screen_height"
    ).split()
)
#: Names of fields that hold identifiers: shown (their values never are).
_IDENTIFIER_FIELDS = frozenset(
    (
        "user_id user click_id partner_id partner_name client_ip_address client_user_agent"
        " em ph ge db ln fn ct st zp country external_id hashed_maids hashed_maid ip_ua key"
        " event_source_url search_string content_name content_category content_brand"
        " item_name item_category item_brand external_measurement_id"
        " external_measurement_vendor_id np"
    ).split()
)
_OBJECT_FIELDS = frozenset(
    (
        "event user_data custom_data contents app_info device_info ids conv match touch"
        " opt_out wifi ldp data"
    ).split()
)
KNOWN_FIELDS: Final = frozenset(
    {*_STRING_FIELDS, *_NUMBER_FIELDS, *_IDENTIFIER_FIELDS, *_OBJECT_FIELDS}
)


# ---------------------------------------------------------------- the rules
def keep_string(field: str | None, value: str) -> bool:
    """Whether a string value of ``field`` may appear in the DLQ as it is."""
    if _HEX64(value):
        return True
    check = _STRING_FIELDS.get(field) if field is not None else None
    return check is not None and value.isascii() and check(value)


def keep_number(field: str | None) -> bool:
    return field is not None and field in _NUMBER_FIELDS


def safe_name(name: str) -> str:
    """A field name as the DLQ may show it: known or plain, else ``[redacted]``."""
    if name in KNOWN_FIELDS:
        return name
    if name.isascii() and _PLAIN_NAME(name) and _few_digits(name, _MAX_NAME_DIGITS):
        return name
    return REDACTED


# ---------------------------------------------------------------- parsed JSON
def redact_value(value: Any, field: str | None = None, depth: int = 0) -> Any:
    """A JSON value with everything not allow-listed replaced by ``[redacted]``."""
    if value is None or value is True or value is False:
        return value
    if depth > MAX_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for name, item in value.items():
            shown = safe_name(name) if isinstance(name, str) else REDACTED
            if shown in out:  # several redacted names: keep each entry apart
                shown = f"{REDACTED} {len(out)}"
            out[shown] = redact_value(item, name if isinstance(name, str) else None, depth + 1)
        return out
    if isinstance(value, list):
        # Items of an array belong to its field (em: [...], content_ids: [...]).
        return [redact_value(item, field, depth + 1) for item in value]
    if isinstance(value, str):
        return value if keep_string(field, value) else REDACTED
    if isinstance(value, int | float):
        return value if keep_number(field) else REDACTED
    return REDACTED


# ---------------------------------------------------------------- unparsed text
_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*(?:"|\\?\Z))
    |(?P<space>\s+)
    |(?P<punct>[{}\[\]:,])
    |(?P<number>-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?=[\s{}\[\]:,"]|\Z))
    |(?P<literal>(?:true|false|null)(?=[\s{}\[\]:,"]|\Z))
    |(?P<word>[^\s{}\[\]:,"]+)
    """,
    re.VERBOSE | re.DOTALL,
)
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_ANY_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def decode_literal(literal: str) -> str:
    """The text of a JSON string literal (possibly broken), escapes decoded."""
    body = literal[1:-1] if len(literal) > 1 and literal.endswith('"') else literal[1:]
    try:
        decoded = json.loads(f'"{body}"', strict=False)
    except ValueError:
        # Not valid JSON (a \\xNN from undecodable bytes, a cut escape): decode
        # what can be decoded, so that escaped names are still recognised.
        decoded = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), body)
        decoded = _ANY_ESCAPE.sub(lambda m: m.group(1), decoded)
    return decoded if isinstance(decoded, str) else body


@dataclass(slots=True)
class _Frame:
    """One open bracket of the text: what its values belong to."""

    kind: str  # "{" or "["
    #: the field the container is the value of (an array's items belong to it)
    field: str | None
    #: the key read last in an object
    key: str | None = None
    #: in an object, right after "{" or ",": the next literal may be a key
    expect_key: bool = True


class _TextRedactor:
    """Walks the tokens of JSON-like text, tracking which field each value is in."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.frames: list[_Frame] = [_Frame("{", None)]

    def field(self) -> str | None:
        frame = self.frames[-1]
        return frame.field if frame.kind == "[" else frame.key

    def is_key(self, index: int) -> bool:
        frame = self.frames[-1]
        if frame.kind != "{" or not frame.expect_key:
            return False  # a literal followed by ":" in value position is a value
        for kind, text in self.tokens[index + 1 :]:
            if kind != "space":
                return text == ":"
        return False

    def run(self) -> str:
        out: list[str] = []
        for index, (kind, text) in enumerate(self.tokens):
            if kind == "string":
                decoded = decode_literal(text)
                if self.is_key(index):
                    self.frames[-1].key = decoded
                    self.frames[-1].expect_key = False
                    out.append(orjson.dumps(safe_name(decoded)).decode())
                elif keep_string(self.field(), decoded) and text.endswith('"'):
                    out.append(orjson.dumps(decoded).decode())
                else:
                    out.append(f'"{REDACTED}"')
            elif kind == "number":
                out.append(text if keep_number(self.field()) else f'"{REDACTED}"')
            elif kind == "punct":
                self.punctuation(text)
                out.append(text)
            elif kind in ("space", "literal"):
                out.append(text)
            else:
                out.append(REDACTED)
        return "".join(out)

    def punctuation(self, text: str) -> None:
        frame = self.frames[-1]
        if text in "{[":
            self.frames.append(_Frame(text, self.field()))
        elif text in "}]":
            if len(self.frames) > 1:
                self.frames.pop()
        elif text == "," and frame.kind == "{":
            frame.key = None
            frame.expect_key = True


def redact_text(text: str) -> str:
    """Redaction of text that could not be parsed as JSON, token by token."""
    tokens = [(str(m.lastgroup), m.group()) for m in _TOKEN.finditer(text)]
    return _TextRedactor(tokens).run()


# ---------------------------------------------------------------- the DLQ raw
def redact_raw(value: bytes | None, parsed: Any = UNPARSED) -> str:
    """The input as text for the DLQ ``raw``: redacted, cut to ``MAX_RAW_CHARS``.

    ``parsed`` is the value already decoded from ``value`` when the caller has
    it; otherwise the value is parsed here. What does not parse is redacted as
    text (undecodable bytes shown as ``\\xNN`` escapes, then redacted like any
    other word).
    """
    if value is None:
        return ""
    if isinstance(parsed, _Unparsed) and len(value) <= _TEXT_HEAD_BYTES:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = UNPARSED
    if not isinstance(parsed, _Unparsed):
        try:
            text = orjson.dumps(redact_value(parsed)).decode("utf-8")
        except (TypeError, orjson.JSONEncodeError):
            text = None
        if text is not None:
            return _truncate(text, len(value))
    head = bytes(value[:_TEXT_HEAD_BYTES])
    text = redact_text(head.decode("utf-8", "backslashreplace"))
    return _truncate(text, len(value), cut=len(head) < len(value))


def _truncate(text: str, total_bytes: int, cut: bool = False) -> str:
    if len(text) <= MAX_RAW_CHARS and not cut:
        return text
    return text[:MAX_RAW_CHARS] + f"...[truncated, {total_bytes} bytes]"
