"""Conversion tokens of the HTTP API, pure part: format, salted hashes, signed records.

A token looks like ``cvm_<token_id>_<secret>``: ``token_id`` is 12 hex digits (it is
the record key in the compacted topic ``api.tokens`` and may be shown and logged),
``secret`` is ``secrets.token_urlsafe(32)`` (256 random bits) and is never stored
nor logged. The topic holds only ``HMAC-SHA256(salt, secret)`` with a random
16-byte salt per token.

Why no slow KDF (scrypt, pbkdf2): those protect *low-entropy* secrets (passwords)
against brute force. A 256-bit random secret cannot be brute-forced whatever the
hash, so one HMAC (about a microsecond) is as safe and keeps the hot path fast.

Records are signed: ``sig`` is an HMAC-SHA256, under ``CONVMESH_TOKEN_SECRET``, of
the record's canonical fields. Whoever can write to ``api.tokens`` without that
secret cannot mint (or revoke) a token: readers drop records whose ``sig`` does not
verify (``verify_record``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

TOKEN_PREFIX = "cvm_"
#: ``.match`` of these is anchored at both ends (``\Z``: ``$`` would accept a
#: trailing newline).
_TOKEN_RE = re.compile(r"cvm_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})\Z")
_TOKEN_ID_RE = re.compile(r"[0-9a-f]{12}\Z")
AD_ACCOUNT_RE = re.compile(r"[0-9]{1,18}\Z")
#: Domain separation: a signature of a token record is good for nothing else.
_SIGNATURE_CONTEXT = b"convmesh api.tokens record v1\n"


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
    #: HMAC-SHA256 of the other fields under the token secret (``signed``).
    sig: str | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> TokenRecord:
        doc = orjson.loads(raw)
        sig = doc.get("sig")
        return cls(
            token_id=str(doc["token_id"]),
            ad_account_id=str(doc["ad_account_id"]),
            salt=doc.get("salt"),
            hash=doc.get("hash"),
            created_at_ms=int(doc.get("created_at_ms") or 0),
            revoked=bool(doc.get("revoked", False)),
            revoked_at_ms=doc.get("revoked_at_ms"),
            sig=sig if isinstance(sig, str) else None,
        )

    def revoke(self, now_ms: int) -> TokenRecord:
        """The revoked form (unsigned): no hash kept, so the token can never verify again."""
        return replace(self, salt=None, hash=None, revoked=True, revoked_at_ms=now_ms, sig=None)

    def canonical(self) -> bytes:
        """The signed bytes: every field but ``sig``, in a fixed order."""
        fields = asdict(self)
        del fields["sig"]
        return _SIGNATURE_CONTEXT + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)

    def signed(self, secret: str) -> TokenRecord:
        return replace(self, sig=_signature(self, secret))


def _signature(record: TokenRecord, secret: str) -> str:
    return hmac.new(secret.encode(), record.canonical(), hashlib.sha256).hexdigest()


def verify_record(record: TokenRecord, secret: str) -> bool:
    """Whether ``record`` was signed with ``secret`` (never with an empty secret)."""
    if not secret or record.sig is None:
        return False
    return hmac.compare_digest(_signature(record, secret), record.sig)


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


def is_ad_account_id(value: str) -> bool:
    """1 to 18 ASCII digits, nothing else (no sign, no trailing newline)."""
    return bool(AD_ACCOUNT_RE.match(value))


def new_token(ad_account_id: str, now_ms: int | None = None) -> tuple[str, TokenRecord]:
    """A fresh token (to print once) and its record (salted hash only, not yet signed)."""
    if not is_ad_account_id(ad_account_id):
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
    """Whether ``secret`` (the part of the token after its id) is the record's."""
    if record.revoked or record.salt is None or record.hash is None:
        return False
    return hmac.compare_digest(_digest(record.salt, secret), record.hash)


def record_view(record: TokenRecord) -> dict[str, Any]:
    """What ``convmesh tokens list`` shows: never the salt, the hash or the signature."""
    return {
        "token_id": record.token_id,
        "ad_account_id": record.ad_account_id,
        "created_at_ms": record.created_at_ms,
        "revoked": record.revoked,
        "revoked_at_ms": record.revoked_at_ms,
    }
