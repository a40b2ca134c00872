"""Normalisation and hashing of identifiers (conversions-api.md)."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest

from shared.contract import identifiers as ids


def test_sha256_hex_is_lower_case_hex_of_utf8() -> None:
    assert ids.sha256_hex("") == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert ids.sha256_hex("é") == hashlib.sha256("é".encode()).hexdigest()
    assert ids.is_sha256_hex(ids.sha256_hex("x"))


@pytest.mark.parametrize(
    "value, ok",
    [
        ("a" * 64, True),
        ("A" * 64, False),
        ("a" * 63, False),
        ("g" * 64, False),
        ("jane@example.com", False),
        (None, False),
        (123, False),
    ],
)
def test_is_sha256_hex(value: object, ok: bool) -> None:
    assert ids.is_sha256_hex(value) is ok


def test_email_is_trimmed_and_lower_cased() -> None:
    assert ids.normalize_email("  Jane.Doe@Example.COM \n") == "jane.doe@example.com"
    assert ids.hash_email(" JANE.DOE@example.com") == ids.sha256_hex("jane.doe@example.com")


@pytest.mark.parametrize(
    "raw, country, expected",
    [
        ("+1 (415) 555-0123", None, "14155550123"),
        ("0044 20 7946 0958", None, "442079460958"),
        ("020 7946 0958", "44", "442079460958"),
        ("415.555.0123", "+1", "14155550123"),
        ("14155550123", "1", "14155550123"),
        ("+49 030 123456", "1", "49030123456"),
    ],
)
def test_phone_digits_only_with_country_code_no_leading_zeros(
    raw: str, country: str | None, expected: str
) -> None:
    assert ids.normalize_phone(raw, country) == expected
    assert ids.hash_phone(raw, country) == ids.sha256_hex(expected)


def test_other_fields() -> None:
    assert ids.normalize_gender(" Female ") == "f"
    assert ids.normalize_gender("M") == "m"
    with pytest.raises(ValueError):
        ids.normalize_gender("unknown")
    assert ids.normalize_dob("1990-04-07") == "19900407"
    assert ids.normalize_dob(date(1990, 4, 7)) == "19900407"
    with pytest.raises(ValueError):
        ids.normalize_dob("90-4-7")
    assert ids.normalize_name(" Zoë ") == "zoë"
    assert ids.normalize_city("San Francisco, CA.") == "sanfranciscoca"
    assert ids.normalize_city("Saint-Étienne") == "saintétienne"
    assert ids.normalize_state(" CA ") == "ca"
    with pytest.raises(ValueError):
        ids.normalize_state("Calif")
    assert ids.normalize_zip("94107-1234") == "94107"
    assert ids.normalize_zip("SW1A 1AA", country="gb") == "11"
    assert ids.normalize_country(" US ") == "us"
    with pytest.raises(ValueError):
        ids.normalize_country("USA")


def test_maid_and_external_id() -> None:
    maid = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
    assert ids.hash_maid(maid) == ids.sha256_hex(maid.lower())
    assert ids.hash_external_id(" 100042 ") == ids.sha256_hex("100042")
