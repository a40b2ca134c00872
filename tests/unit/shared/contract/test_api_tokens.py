"""shared.contract.api_tokens: token format, salted hashes, signed records."""

from __future__ import annotations

import re

import pytest

from shared.contract.api_tokens import (
    TokenRecord,
    is_ad_account_id,
    is_token_id,
    new_token,
    parse_token,
    record_view,
    verify_against,
    verify_record,
)

AD = "549755885175"
SECRET = "s" * 32


def test_new_token_embeds_its_id_and_is_urlsafe():
    token, record = new_token(AD, now_ms=5)
    assert re.fullmatch(r"cvm_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    token_id, _secret = parse_token(token)
    assert token_id == record.token_id
    assert record.ad_account_id == AD and record.created_at_ms == 5 and not record.revoked


def test_the_record_never_holds_the_secret():
    token, record = new_token(AD)
    _, secret = parse_token(token)
    raw = record.signed(SECRET).to_bytes().decode()
    assert secret not in raw and token not in raw and SECRET not in raw
    assert len(record.hash) == 64 and len(record.salt) == 32


def test_salts_differ_so_hashes_differ():
    records = [new_token(AD)[1] for _ in range(20)]
    assert len({r.salt for r in records}) == 20
    assert len({r.hash for r in records}) == 20


def test_verify_accepts_the_token_and_rejects_a_changed_secret():
    token, record = new_token(AD)
    _, secret = parse_token(token)
    assert verify_against(record, secret)
    assert not verify_against(record, secret[:-1] + ("A" if secret[-1] != "A" else "B"))


@pytest.mark.parametrize("ad", ["", "12a", "1" * 19, "-1", "123\n", "١٢٣"])
def test_new_token_needs_a_digit_ad_account(ad):
    with pytest.raises(ValueError):
        new_token(ad)


def test_an_ad_account_id_with_a_trailing_newline_is_refused():
    assert is_ad_account_id("123") and not is_ad_account_id("123\n")


def test_a_token_id_with_a_trailing_newline_is_refused():
    assert is_token_id("0123456789ab") and not is_token_id("0123456789ab\n")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "cvm_",
        "Bearer x",
        "cvm_XYZ_abc",
        "cvm_0123456789ab_short",
        "cvm_0123456789ab_" + "a" * 30 + "\n",
    ],
)
def test_malformed_tokens_do_not_parse(bad):
    assert parse_token(bad) is None


def test_a_signed_record_verifies_with_its_secret_only():
    _, record = new_token(AD)
    signed = record.signed(SECRET)
    assert verify_record(signed, SECRET)
    assert not verify_record(signed, "t" * 32)
    assert not verify_record(record, SECRET)  # unsigned
    assert not verify_record(record.signed(""), "")  # never with an empty secret


@pytest.mark.parametrize(
    "change",
    [
        {"ad_account_id": "42"},
        {"hash": "0" * 64},
        {"token_id": "0123456789ab"},
        {"revoked": True},
        {"created_at_ms": 1},
    ],
)
def test_changing_any_signed_field_breaks_the_signature(change):
    from dataclasses import replace

    _, record = new_token(AD)
    assert not verify_record(replace(record.signed(SECRET), **change), SECRET)


def test_revoking_drops_the_hash_and_the_old_signature():
    _, record = new_token(AD)
    revoked = record.signed(SECRET).revoke(99)
    assert revoked.revoked and revoked.revoked_at_ms == 99 and revoked.hash is None
    assert revoked.sig is None


def test_record_round_trips_and_list_view_hides_hash_salt_and_signature():
    _, record = new_token(AD)
    signed = record.signed(SECRET)
    assert TokenRecord.from_bytes(signed.to_bytes()) == signed
    view = record_view(signed)
    assert not {"hash", "salt", "sig"} & set(view)
    assert view["token_id"] == record.token_id and view["ad_account_id"] == AD
