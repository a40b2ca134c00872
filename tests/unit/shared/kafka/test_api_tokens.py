"""shared.kafka.api_tokens: the token store and reader keep signed records only."""

from __future__ import annotations

from structlog.testing import capture_logs

from shared.contract.api_tokens import TokenRecord
from shared.kafka.api_tokens import TokenReader, TokenStore, new_token, parse_token
from shared.runtime.settings import Settings

AD = "549755885175"
SECRET = "s" * 32


def signed_token(ad: str = AD) -> tuple[str, TokenRecord]:
    token, record = new_token(ad)
    return token, record.signed(SECRET)


def applied(*records: TokenRecord) -> TokenStore:
    store = TokenStore(signing_secret=SECRET)
    for record in records:
        store.apply(record.token_id.encode(), record.to_bytes())
    return store


def test_store_verifies_known_tokens_only():
    token, record = signed_token()
    other, _ = signed_token()
    store = applied(record)
    assert store.verify(token) == record
    assert store.verify(token) == record  # cached path
    assert store.verify(other) is None
    assert store.verify("cvm_garbage") is None


def test_an_unsigned_record_mints_no_token_and_is_logged_by_id_only():
    token, record = new_token(AD)
    with capture_logs() as logs:
        store = applied(record)
    assert store.verify(token) is None and len(store) == 0
    [entry] = logs
    assert entry["event"] == "api_token_record_rejected"
    assert entry["token_id"] == record.token_id and entry["problem"] == "unsigned"
    assert record.hash not in str(entry) and record.salt not in str(entry)


def test_a_record_signed_with_another_secret_is_rejected():
    token, record = new_token(AD)
    with capture_logs() as logs:
        store = applied(record.signed("f" * 32))
    assert store.verify(token) is None
    assert logs[0]["problem"] == "bad_signature"


def test_a_signed_record_under_another_key_is_rejected():
    token, record = signed_token()
    store = TokenStore(signing_secret=SECRET)
    store.apply(b"0123456789ab", record.to_bytes())
    assert store.verify(token) is None and len(store) == 0


def test_a_forged_revocation_leaves_the_token_valid():
    token, record = signed_token()
    store = applied(record, record.revoke(99))
    assert store.verify(token) == record


def test_revocation_takes_effect_even_after_a_cached_verification():
    token, record = signed_token()
    store = applied(record)
    assert store.verify(token) is not None
    revoked = record.revoke(99).signed(SECRET)
    store.apply(record.token_id.encode(), revoked.to_bytes())
    assert store.verify(token) is None
    assert store.get(record.token_id).revoked


def test_a_store_without_a_secret_accepts_no_record():
    token, record = signed_token()
    store = TokenStore()
    store.apply(record.token_id.encode(), record.to_bytes())
    assert store.verify(token) is None


def test_tombstone_removes_the_token():
    token, record = signed_token()
    store = applied(record)
    assert store.verify(token) is not None
    store.apply(record.token_id.encode(), None)
    assert store.verify(token) is None and len(store) == 0


def test_unreadable_record_is_ignored():
    store = TokenStore(signing_secret=SECRET)
    for junk in (b"not json", b"[1]", b'{"token_id": 1}'):
        store.apply(b"0123456789ab", junk)
    assert len(store) == 0


def test_a_token_of_another_id_with_the_right_secret_fails():
    token_a, record_a = signed_token()
    _, record_b = signed_token("42")
    _, secret_a = parse_token(token_a)
    store = applied(record_a, record_b)
    assert store.verify(f"cvm_{record_b.token_id}_{secret_a}") is None


def test_reader_verifies_with_the_settings_secret_and_names_the_account():
    """The interface the aggregate service calls: TokenReader(settings).verify(token)."""
    settings = Settings(dev_mode=True)
    token, record = new_token(AD)
    reader = TokenReader(settings)
    signed = record.signed(settings.active_token_secret)
    reader.store.apply(record.token_id.encode(), signed.to_bytes())
    verified = reader.verify(token)
    assert verified is not None and verified.ad_account_id == AD
    assert not reader.ready.is_set()
