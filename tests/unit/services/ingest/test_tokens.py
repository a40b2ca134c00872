"""services.ingest.tokens: token format, salted hashes, verification, the store."""

from __future__ import annotations

import re

import pytest

from services.ingest.tokens import (
    TokenRecord,
    TokenStore,
    new_token,
    parse_token,
    record_view,
    verify_against,
)

AD = "549755885175"


def test_new_token_embeds_its_id_and_is_urlsafe():
    token, record = new_token(AD, now_ms=5)
    assert re.fullmatch(r"cvm_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    token_id, secret = parse_token(token)
    assert token_id == record.token_id
    assert record.ad_account_id == AD and record.created_at_ms == 5 and not record.revoked


def test_the_record_never_holds_the_secret():
    token, record = new_token(AD)
    _, secret = parse_token(token)
    raw = record.to_bytes().decode()
    assert secret not in raw and token not in raw
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


@pytest.mark.parametrize("ad", ["", "12a", "1" * 19, "-1"])
def test_new_token_needs_a_digit_ad_account(ad):
    with pytest.raises(ValueError):
        new_token(ad)


@pytest.mark.parametrize("bad", ["", "cvm_", "Bearer x", "cvm_XYZ_abc", "cvm_0123456789ab_short"])
def test_malformed_tokens_do_not_parse(bad):
    assert parse_token(bad) is None


def test_store_verifies_known_tokens_only():
    token, record = new_token(AD)
    other, _ = new_token(AD)
    store = TokenStore([record])
    assert store.verify(token) == record
    assert store.verify(token) == record  # cached path
    assert store.verify(other) is None
    assert store.verify("cvm_garbage") is None


def test_revocation_takes_effect_even_after_a_cached_verification():
    token, record = new_token(AD)
    store = TokenStore([record])
    assert store.verify(token) is not None
    store.apply(record.token_id.encode(), record.revoke(99).to_bytes())
    assert store.verify(token) is None
    revoked = store.get(record.token_id)
    assert revoked.revoked and revoked.revoked_at_ms == 99 and revoked.hash is None


def test_tombstone_removes_the_token():
    token, record = new_token(AD)
    store = TokenStore()
    store.apply(record.token_id.encode(), record.to_bytes())
    assert store.verify(token) is not None
    store.apply(record.token_id.encode(), None)
    assert store.verify(token) is None and len(store) == 0


def test_unreadable_record_is_ignored():
    store = TokenStore()
    store.apply(b"0123456789ab", b"not json")
    assert len(store) == 0


def test_record_round_trips_and_list_view_hides_hash_and_salt():
    _, record = new_token(AD)
    assert TokenRecord.from_bytes(record.to_bytes()) == record
    view = record_view(record)
    assert "hash" not in view and "salt" not in view
    assert view["token_id"] == record.token_id and view["ad_account_id"] == AD


def test_a_token_of_another_id_with_the_right_secret_fails():
    token_a, record_a = new_token(AD)
    token_b, record_b = new_token("42")
    _, secret_a = parse_token(token_a)
    store = TokenStore([record_a, record_b])
    forged = f"cvm_{record_b.token_id}_{secret_a}"
    assert store.verify(forged) is None
