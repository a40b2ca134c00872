"""The token topic ``api.tokens``: store, reader, loading and publishing of signed records.

Used by ingest (the Conversions API), by aggregate (its advertiser report API checks
that a bearer token belongs to the ad account) and by ``convmesh tokens``. The
record format, hashing and signing are in ``shared.contract.api_tokens``.

Public interface of the reader::

    reader = TokenReader(settings)
    await reader.start()
    await reader.ready.wait()            # the topic read to its end at start
    record = reader.verify(token)        # TokenRecord | None; record.ad_account_id
    await reader.stop()

Verified tokens are cached by the SHA-256 of the whole token so that a repeated
request costs one dict lookup plus one hash; the cache is dropped whenever a record
changes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from shared.contract.api_tokens import (
    AD_ACCOUNT_RE,
    TokenRecord,
    is_ad_account_id,
    is_token_id,
    new_token,
    parse_token,
    record_view,
    verify_against,
    verify_record,
)
from shared.contract.errors import ConvmeshError
from shared.kafka.client_config import client_kwargs
from shared.kafka.compacted_view import CompactedView
from shared.kafka.topic_io import read_all
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

__all__ = [
    "AD_ACCOUNT_RE",
    "TOPIC",
    "TokenReader",
    "TokenRecord",
    "TokenStore",
    "is_ad_account_id",
    "is_token_id",
    "load_tokens",
    "new_token",
    "parse_token",
    "publish_record",
    "record_view",
    "verify_against",
]

TOPIC = "api.tokens"
_MAX_CACHED = 100_000

log = get_logger(component="api.tokens")


class TokenStore:
    """The in-memory view of ``api.tokens``: token_id -> record, plus a verification cache.

    ``apply`` (records read from the topic) keeps only records signed with
    ``signing_secret``; ``put`` is for records the caller already trusts.
    """

    def __init__(self, records: Iterable[TokenRecord] = (), *, signing_secret: str = "") -> None:
        self._secret = signing_secret
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
        """Apply one record of the compacted topic (a null value is a tombstone).

        A record that is not signed with the token secret, or whose key is not
        its token id, is dropped and logged (by token id only): it was not
        written by ``convmesh tokens``.
        """
        if key is None:
            return
        token_id = key.decode("utf-8", "replace")
        shown_id = token_id if is_token_id(token_id) else "invalid"
        if value is None:
            self.delete(token_id)
            return
        try:
            record = TokenRecord.from_bytes(value)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("api_token_record_unreadable", token_id=shown_id)
            return
        if record.token_id != token_id or not verify_record(record, self._secret):
            problem = "unsigned" if record.sig is None else "bad_signature"
            log.warning("api_token_record_rejected", token_id=shown_id, problem=problem)
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
        if len(self._verified) > _MAX_CACHED:
            self._verified.clear()
        self._verified[cache_key] = record
        return record


def signing_secret(settings: Settings) -> str:
    """The token secret in force; refuses to go on without one."""
    secret = settings.active_token_secret
    if not secret:
        raise ConvmeshError(
            "CONVMESH_TOKEN_SECRET is required to sign api.tokens records"
            " (or set CONVMESH_DEV_MODE=true)"
        )
    return secret


async def load_tokens(settings: Settings) -> TokenStore:
    """Read ``api.tokens`` from the beginning to its current end (for the CLI)."""
    store = TokenStore(signing_secret=settings.active_token_secret)
    for read in await read_all(settings, settings.topic_name(TOPIC)):
        store.apply(read.key, read.value)
    return store


async def publish_record(settings: Settings, record: TokenRecord) -> None:
    """Sign and write one token record, acknowledged by every in-sync replica."""
    signed = record.signed(signing_secret(settings))
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic_name(TOPIC), signed.to_bytes(), key=signed.token_id.encode("ascii")
        )
    finally:
        await producer.stop()


class TokenReader:
    """Follows ``api.tokens`` for the life of a worker and keeps a TokenStore.

    ``ready`` is set once the topic has been read up to the end it had at start, so
    that a restarted worker does not answer 401 to valid tokens it has not read yet.
    """

    def __init__(self, settings: Settings, store: TokenStore | None = None) -> None:
        self.store = (
            store if store is not None else TokenStore(signing_secret=settings.active_token_secret)
        )
        self._view = CompactedView(settings, settings.topic_name(TOPIC), apply=self.store.apply)
        self.ready = self._view.ready
        self._task: asyncio.Task[None] | None = None

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a valid, unrevoked token (``record.ad_account_id``), else None."""
        return self.store.verify(token)

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
