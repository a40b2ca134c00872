"""Conversion tokens of the HTTP API: creation, salted hashes, verification, the token store.

A token looks like ``cvm_<token_id>_<secret>``: ``token_id`` is 12 hex digits (it is the
record key in the compacted topic ``api.tokens`` and may be shown and logged), ``secret``
is ``secrets.token_urlsafe(32)`` (256 random bits) and is never stored nor logged. The
topic holds only ``HMAC-SHA256(salt, secret)`` with a random 16-byte salt per token.

Why no slow KDF (scrypt, pbkdf2): those protect *low-entropy* secrets (passwords) against
brute force. A 256-bit random secret cannot be brute-forced whatever the hash, so one
HMAC (about a microsecond) is as safe and keeps the hot path fast; verified tokens are
nevertheless cached by the SHA-256 of the whole token so that a repeated request costs
one dict lookup plus one hash. The cache is dropped whenever a record changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.kafka import codec
from shared.kafka.client_config import client_kwargs
from shared.kafka.compacted_view import CompactedView
from shared.kafka.topic_io import read_all
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

TOKEN_PREFIX = "cvm_"
TOPIC = "api.tokens"
_TOKEN_RE = re.compile(r"^cvm_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_TOKEN_ID_RE = re.compile(r"^[0-9a-f]{12}$")
AD_ACCOUNT_RE = re.compile(r"^[0-9]{1,18}$")

log = get_logger(component="api.tokens")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One record of ``api.tokens`` (the value; the key is ``token_id``)."""

    token_id: str
    ad_account_id: str
    salt: str | None
    hash: str | None
    created_at_ms: int
    revoked: bool = False
    revoked_at_ms: int | None = None

    def to_bytes(self) -> bytes:
        return codec.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> TokenRecord:
        doc = codec.loads(raw)
        return cls(
            token_id=str(doc["token_id"]),
            ad_account_id=str(doc["ad_account_id"]),
            salt=doc.get("salt"),
            hash=doc.get("hash"),
            created_at_ms=int(doc.get("created_at_ms") or 0),
            revoked=bool(doc.get("revoked", False)),
            revoked_at_ms=doc.get("revoked_at_ms"),
        )

    def revoke(self, now_ms: int) -> TokenRecord:
        """The revoked form: no hash kept, so the token can never verify again."""
        return replace(self, salt=None, hash=None, revoked=True, revoked_at_ms=now_ms)


def _digest(salt_hex: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt_hex), secret.encode("utf-8"), hashlib.sha256).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a well-formed token, else None."""
    match = _TOKEN_RE.match(token)
    if match is None:
        return None
    return match.group(1), match.group(2)


def is_token_id(value: str) -> bool:
    return bool(_TOKEN_ID_RE.match(value))


def new_token(ad_account_id: str, now_ms: int | None = None) -> tuple[str, TokenRecord]:
    """A fresh token (to print once) and the record to store (salted hash only)."""
    if not AD_ACCOUNT_RE.match(ad_account_id):
        raise ValueError("an ad account id is 1 to 18 digits")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    record = TokenRecord(
        token_id=token_id,
        ad_account_id=ad_account_id,
        salt=salt,
        hash=_digest(salt, secret),
        created_at_ms=int(time.time() * 1000) if now_ms is None else now_ms,
    )
    return f"{TOKEN_PREFIX}{token_id}_{secret}", record


def verify_against(record: TokenRecord, secret: str) -> bool:
    if record.revoked or record.salt is None or record.hash is None:
        return False
    return hmac.compare_digest(_digest(record.salt, secret), record.hash)


class TokenStore:
    """The in-memory view of ``api.tokens``: token_id -> record, plus a verification cache."""

    def __init__(self, records: Iterable[TokenRecord] = ()) -> None:
        self._records: dict[str, TokenRecord] = {}
        #: sha256(token) -> record, for tokens verified once since the last change
        self._verified: dict[bytes, TokenRecord] = {}
        for record in records:
            self.put(record)

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[TokenRecord]:
        return sorted(self._records.values(), key=lambda r: (r.created_at_ms, r.token_id))

    def get(self, token_id: str) -> TokenRecord | None:
        return self._records.get(token_id)

    def put(self, record: TokenRecord) -> None:
        self._records[record.token_id] = record
        self._verified.clear()

    def delete(self, token_id: str) -> None:
        self._records.pop(token_id, None)
        self._verified.clear()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the compacted topic (a null value is a tombstone)."""
        if key is None:
            return
        token_id = key.decode("utf-8", "replace")
        if value is None:
            self.delete(token_id)
            return
        try:
            record = TokenRecord.from_bytes(value)
        except (ValueError, KeyError, TypeError):
            log.warning("api_token_record_unreadable", token_id=token_id)
            return
        self.put(record)

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a valid, unrevoked token, else None. Never logs the token."""
        cache_key = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self._verified.get(cache_key)
        if cached is not None:
            return cached
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        record = self._records.get(token_id)
        if record is None or not verify_against(record, secret):
            return None
        if len(self._verified) > 100_000:
            self._verified.clear()
        self._verified[cache_key] = record
        return record


# ----------------------------------------------------------------- Kafka side


async def load_tokens(settings: Settings) -> TokenStore:
    """Read ``api.tokens`` from the beginning to its current end (for the CLI)."""
    store = TokenStore()
    for read in await read_all(settings, settings.topic_name(TOPIC)):
        store.apply(read.key, read.value)
    return store


async def publish_record(settings: Settings, record: TokenRecord) -> None:
    """Write one token record, acknowledged by every in-sync replica."""
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic_name(TOPIC), record.to_bytes(), key=record.token_id.encode("ascii")
        )
    finally:
        await producer.stop()


class TokenReader:
    """Follows ``api.tokens`` for the life of an ingest worker and keeps a TokenStore.

    ``ready`` is set once the topic has been read up to the end it had at start, so
    that a restarted worker does not answer 401 to valid tokens it has not read yet.
    """

    def __init__(self, settings: Settings, store: TokenStore | None = None) -> None:
        self.store = store if store is not None else TokenStore()
        self._view = CompactedView(settings, settings.topic_name(TOPIC), apply=self.store.apply)
        self.ready = self._view.ready
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._view.run(), name="api-token-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
            self._task = None


def record_view(record: TokenRecord) -> dict[str, Any]:
    """What ``convmesh tokens list`` shows: never the salt or the hash."""
    return {
        "token_id": record.token_id,
        "ad_account_id": record.ad_account_id,
        "created_at_ms": record.created_at_ms,
        "revoked": record.revoked,
        "revoked_at_ms": record.revoked_at_ms,
    }
