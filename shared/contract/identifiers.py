"""Identifier normalisation and hashing, as advertisers apply it before sending.

The rules are those of the Conversions API (docs: conversions-api.md): email
trimmed and lower-cased; phone digits only, with country code, no leading
zeros; gender ``f``/``m``/``n``; date of birth ``YYYYMMDD``; names lower-case;
city lower-case without spaces or punctuation; state two-letter lower-case; zip
digits only (US: 5); country ISO-3166 alpha-2 lower-case. Hashes are SHA-256,
lower-case hex. The onsite session key of ``identity.signals`` (``key_type =
"ip_ua"``) is ``shared.contract.keys.ip_ua_hash``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import date, datetime

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NON_DIGITS = re.compile(r"\D+")

_GENDERS = {
    "f": "f",
    "female": "f",
    "w": "f",
    "woman": "f",
    "m": "m",
    "male": "m",
    "man": "m",
    "n": "n",
    "nonbinary": "n",
    "non-binary": "n",
    "x": "n",
}


def sha256_hex(text: str) -> str:
    """SHA-256 of the UTF-8 text, lower-case hex (64 characters)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256_hex(value: object) -> bool:
    """True for a string of exactly 64 lower-case hex characters."""
    return isinstance(value, str) and _HEX64.match(value) is not None


def normalize_email(email: str) -> str:
    return email.strip().lower()


def normalize_phone(phone: str, country_code: str | None = None) -> str:
    """Digits only, no leading zeros, with the country code.

    ``country_code`` (digits, e.g. ``"1"`` or ``"+44"``) is prefixed when the
    number is written in national form (starts with a trunk ``0`` or has no
    ``+``/``00`` international prefix and does not already start with the code).
    """
    text = phone.strip()
    international = text.startswith("+") or text.startswith("00")
    digits = _NON_DIGITS.sub("", text)
    if country_code is not None and not international:
        code = _NON_DIGITS.sub("", country_code).lstrip("0")
        national = digits.lstrip("0")
        if digits.startswith("0") or not national.startswith(code):
            digits = code + national
    return digits.lstrip("0")


def normalize_gender(gender: str) -> str:
    key = gender.strip().lower()
    try:
        return _GENDERS[key]
    except KeyError:
        raise ValueError(f"unknown gender {gender!r}; expected f, m or n") from None


def normalize_dob(dob: str | date | datetime) -> str:
    """``YYYYMMDD`` from a date or text such as ``1990-04-07`` or ``19900407``."""
    if isinstance(dob, datetime):
        dob = dob.date()
    if isinstance(dob, date):
        return dob.strftime("%Y%m%d")
    digits = _NON_DIGITS.sub("", dob)
    if len(digits) != 8:
        raise ValueError(f"date of birth {dob!r} is not year, month and day")
    return digits


def normalize_name(name: str) -> str:
    return name.strip().lower()


def normalize_city(city: str) -> str:
    """Lower-case letters and digits only (no spaces, no punctuation)."""
    lowered = unicodedata.normalize("NFC", city).lower()
    return "".join(ch for ch in lowered if ch.isalnum())


def normalize_state(state: str) -> str:
    value = state.strip().lower()
    if len(value) != 2 or not value.isalpha():
        raise ValueError(f"state {state!r} is not a two-letter code")
    return value


def normalize_zip(zip_code: str, country: str | None = "us") -> str:
    digits = _NON_DIGITS.sub("", zip_code)
    if country is not None and country.strip().lower() == "us":
        return digits[:5]
    return digits


def normalize_country(country: str) -> str:
    value = country.strip().lower()
    if len(value) != 2 or not value.isalpha():
        raise ValueError(f"country {country!r} is not an ISO-3166 alpha-2 code")
    return value


def hash_email(email: str) -> str:
    return sha256_hex(normalize_email(email))


def hash_phone(phone: str, country_code: str | None = None) -> str:
    return sha256_hex(normalize_phone(phone, country_code))


def hash_maid(maid: str) -> str:
    """A mobile advertising id (IDFA / GAID), lower-cased, then hashed."""
    return sha256_hex(maid.strip().lower())


def hash_external_id(external_id: str) -> str:
    """An advertiser's own customer id; hashed as given, only trimmed."""
    return sha256_hex(external_id.strip())
