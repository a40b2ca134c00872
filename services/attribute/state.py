"""The attribute service's table values, typed.

On the wire (RocksDB and changelog) the values keep the JSON layout they had
before they were typed; ``decode_*`` and ``encode_*`` translate, so typed code
needs no migration of old state. A layout change bumps ``LAYOUT_VERSION`` and
teaches the decoders every older one.

``users`` (key: internal user id, co-partitioned with attribution.user_events)::

    {"eng": {engagement_id: [ts_ms, type, ad_account_id, campaign_id, ad_group_id, ad_id]},
     "convs": {conversion_key: {"conv", "mv", "seq", "key_type", "sig", "expires_ms"}},
     "privacy": [ts_ms, arrival, kind] | null,
     "named": [conversion_key, ...]}

``published`` (key: conversion_key)::

    {"order": [mv, seq], "record": <the conversions.attributed record published>}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LAYOUT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Engagement:
    """One ad engagement of the user (the fields attribution needs)."""

    ts_ms: int
    type: str
    ad_account_id: str
    campaign_id: str | None
    ad_group_id: str | None
    ad_id: str | None


@dataclass(frozen=True, slots=True)
class Assigned:
    """A conversion assigned to the user, kept for the late-data horizon."""

    #: The conversion's facts (no identifiers), as identity_match sent them.
    conv: Mapping[str, Any]
    #: Match version of the assignment (identity_match's stamp).
    mv: int
    #: Attribution stamp of the last result sent (0 before the first).
    seq: int
    key_type: str
    #: ``(status, reason, engagement_id)`` of the last result sent: a
    #: re-evaluation that gives the same signature sends nothing.
    sig: tuple[Any, ...] | None
    expires_ms: int


@dataclass(frozen=True, slots=True)
class PrivacyChoice:
    """The user's latest opt_out / opt_in request (by ts_ms, ties by arrival)."""

    ts_ms: int
    arrival: int
    kind: str


@dataclass(frozen=True, slots=True)
class User:
    """One user's state: engagements, assigned conversions, privacy choice."""

    engagements: Mapping[str, Engagement] = field(default_factory=dict)
    convs: Mapping[str, Assigned] = field(default_factory=dict)
    privacy: PrivacyChoice | None = None
    #: Every conversion key ever assigned to the user, kept past the late-data
    #: horizon: a deletion must reach every result that named the user.
    named: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.engagements or self.convs or self.privacy or self.named)


@dataclass(frozen=True, slots=True)
class Published:
    """What the publisher last wrote to conversions.attributed for one key."""

    #: ``(mv, seq)`` of the result published.
    order: tuple[int, int]
    record: Mapping[str, Any]


def decode_user(value: Any) -> User:
    """A ``users`` value (decoded JSON, or None for a new user) as typed state."""
    if value is None:
        return User()
    privacy = value.get("privacy")
    return User(
        engagements={eid: Engagement(*row) for eid, row in value["eng"].items()},
        convs={key: _decode_assigned(entry) for key, entry in value["convs"].items()},
        privacy=PrivacyChoice(*privacy) if privacy else None,
        named=tuple(value.get("named", ())),
    )


def _decode_assigned(entry: Mapping[str, Any]) -> Assigned:
    sig = entry.get("sig")
    return Assigned(
        conv=entry["conv"],
        mv=entry["mv"],
        seq=entry["seq"],
        key_type=entry["key_type"],
        sig=tuple(sig) if sig is not None else None,
        expires_ms=entry["expires_ms"],
    )


def encode_user(user: User) -> dict[str, Any] | None:
    """The wire layout of ``user``; None (a tombstone) when nothing is left."""
    if user.is_empty():
        return None
    privacy = user.privacy
    return {
        "eng": {
            eid: [e.ts_ms, e.type, e.ad_account_id, e.campaign_id, e.ad_group_id, e.ad_id]
            for eid, e in user.engagements.items()
        },
        "convs": {key: _encode_assigned(entry) for key, entry in user.convs.items()},
        "privacy": [privacy.ts_ms, privacy.arrival, privacy.kind] if privacy else None,
        "named": list(user.named),
    }


def _encode_assigned(entry: Assigned) -> dict[str, Any]:
    return {
        "conv": entry.conv,
        "mv": entry.mv,
        "seq": entry.seq,
        "key_type": entry.key_type,
        "sig": list(entry.sig) if entry.sig is not None else None,
        "expires_ms": entry.expires_ms,
    }


def decode_published(value: Any) -> Published | None:
    """A ``published`` value (decoded JSON, or None) as typed state."""
    if value is None:
        return None
    mv, seq = value["order"]
    return Published(order=(mv, seq), record=value["record"])


def encode_published(published: Published) -> dict[str, Any]:
    return {"order": list(published.order), "record": published.record}
