"""The attribute service's table values, typed.

On the wire (RocksDB and changelog) the values keep the JSON layout they had
before they were typed; ``decode_*`` and ``encode_*`` translate, so typed code
needs no migration of old state. A layout change bumps ``LAYOUT_VERSION`` and
teaches the decoders every older one.

``users`` (partitioned by the internal user id, co-partitioned with
attribution.user_events) keeps a user's state one part per key, so that no
value grows with the user's activity (a user shown 60 ads a day would pass a
Kafka record's 1 MB within the engagements' 127 days):

* ``"{user}"``: ``{"privacy": [ts_ms, arrival, kind]}``; no value without a choice;
* ``"{user}|e|{engagement_id}"``: ``[ts_ms, type, ad_account_id, campaign_id,
  ad_group_id, ad_id]``, one engagement;
* ``"{user}|c|{conversion_key}"``: ``{"conv", "mv", "seq", "key_type", "sig",
  "expires_ms"}``, a conversion assigned to the user;
* ``"{user}|n|{conversion_key}"``: ``true``, a conversion ever assigned to the user
  (a deletion scrubs each).

All of a user's keys are in the user's partition, so a batch's writes of them
reach the store in one write batch and the changelog in order; each kind is
read by its prefix (internal user ids hold no ``|``). A value written before
the split keeps everything under ``"{user}"``::

    {"eng": {engagement_id: [...]}, "convs": {conversion_key: {...}},
     "privacy": [ts_ms, arrival, kind] | null, "named": [conversion_key, ...]}

read as if its parts had their own keys, and split on its next write.

``published`` (key: conversion_key)::

    {"order": [mv, seq], "record": <the conversions.attributed record published>}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any

from shared.runtime.key_groups import ItemWrites, group_key, item_writes, owner_of
from shared.values import value_class

LAYOUT_VERSION = 1


@value_class(frozen=True, slots=True)
class Engagement:
    """One ad engagement of the user (the fields attribution needs)."""

    ts_ms: int
    type: str
    ad_account_id: str
    campaign_id: str | None
    ad_group_id: str | None
    ad_id: str | None


@value_class(frozen=True, slots=True)
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


@value_class(frozen=True, slots=True)
class PrivacyChoice:
    """The user's latest opt_out / opt_in request (by ts_ms, ties by arrival)."""

    ts_ms: int
    arrival: int
    kind: str


@value_class(frozen=True, slots=True)
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


@value_class(frozen=True, slots=True)
class Published:
    """What the publisher last wrote to conversions.attributed for one key."""

    #: ``(mv, seq)`` of the result published.
    order: tuple[int, int]
    record: Mapping[str, Any]


@value_class(frozen=True, slots=True)
class UserParts:
    """The parts of a user's state kept under keys of their own (or some of them:
    what an input read), by engagement id and conversion key."""

    engagements: Mapping[str, Engagement] = field(default_factory=dict)
    convs: Mapping[str, Assigned] = field(default_factory=dict)
    named: frozenset[str] = frozenset()


#: The kinds of parts, in the order an input's writes are staged (then the
#: ``"{user}"`` value): the changelog keeps a partition's records in order, so
#: a crash can leave an earlier kind newer than a later one, never the reverse.
#: A name before its conversion (a redelivered assignment found known adds no
#: name); conversions before engagements and the privacy choice (a
#: conversion's ``sig`` must not lag what its last result was computed from,
#: or a later change back would not be sent).
PART_KINDS = {"named": "n", "convs": "c", "engagements": "e"}

#: A user's keys start with the user (shared.runtime.key_groups).
user_of_key = owner_of


def part_prefix(user_id: str, kind: str) -> str:
    """The start of every key of one kind of ``user_id``'s parts."""
    return group_key(user_id, PART_KINDS[kind]) + "|"


def part_key(user_id: str, kind: str, item: str) -> str:
    """The key of an engagement id or a conversion key of ``user_id``."""
    return part_prefix(user_id, kind) + item


def decode_engagement(row: Any) -> Engagement:
    return Engagement(*row)


def encode_engagement(e: Engagement) -> list[Any]:
    return [e.ts_ms, e.type, e.ad_account_id, e.campaign_id, e.ad_group_id, e.ad_id]


def encode_assigned(entry: Assigned) -> dict[str, Any]:
    return {
        "conv": entry.conv,
        "mv": entry.mv,
        "seq": entry.seq,
        "key_type": entry.key_type,
        "sig": list(entry.sig) if entry.sig is not None else None,
        "expires_ms": entry.expires_ms,
    }


def decode_user(value: Any, parts: UserParts | None = None) -> User:
    """A user's state: the ``"{user}"`` value (decoded JSON, or None) and the parts
    read from their own keys. A value of the old layout brings its own parts; those
    of their own keys win (written later)."""
    value = value or {}
    parts = parts or UserParts()
    privacy = value.get("privacy")
    engagements = {eid: Engagement(*row) for eid, row in value.get("eng", {}).items()}
    engagements.update(parts.engagements)
    convs = {key: decode_assigned(entry) for key, entry in value.get("convs", {}).items()}
    convs.update(parts.convs)
    inline_named = tuple(value.get("named", ()))
    named = inline_named + tuple(sorted(parts.named - set(inline_named)))
    return User(
        engagements=engagements,
        convs=convs,
        privacy=PrivacyChoice(*privacy) if privacy else None,
        named=named,
    )


def decode_assigned(entry: Mapping[str, Any]) -> Assigned:
    sig = entry.get("sig")
    return Assigned(
        conv=entry["conv"],
        mv=entry["mv"],
        seq=entry["seq"],
        key_type=entry["key_type"],
        sig=tuple(sig) if sig is not None else None,
        expires_ms=entry["expires_ms"],
    )


def encode_user(user: User | None) -> dict[str, Any] | None:
    """The ``"{user}"`` value of ``user`` (its parts go to keys of their own); None
    (a tombstone, or no value) without a privacy choice."""
    privacy = user.privacy if user is not None else None
    if privacy is None:
        return None
    return {"privacy": [privacy.ts_ms, privacy.arrival, privacy.kind]}


@value_class(frozen=True, slots=True)
class Concerned:
    """The parts an input may have changed, whether or not it changes them now."""

    engagements: frozenset[str] = frozenset()
    convs: frozenset[str] = frozenset()
    named: frozenset[str] = frozenset()


def part_writes(stored: UserParts, new: User | None, concerned: Concerned) -> dict[str, ItemWrites]:
    """The writes of each kind of part (``PART_KINDS``, in order) that take the
    user's keys from ``stored`` (what the input read of them) to ``new``.

    A part is put when it is new or changed (a part of the old layout, kept in
    the ``"{user}"`` value, is new to its key), or when the input concerns it (a
    redelivered input writes again what its first delivery may have left out of
    the changelog: see StateCache.rewrite); a part read and no longer in ``new``
    (trimmed, retracted, the user deleted) is deleted.
    """
    user = new if new is not None else User()
    named = dict.fromkeys(user.named, True)
    return {
        "named": item_writes(dict.fromkeys(stored.named, True), named, concerned.named),
        "convs": item_writes(stored.convs, user.convs, concerned.convs, encode_assigned),
        "engagements": item_writes(
            stored.engagements, user.engagements, concerned.engagements, encode_engagement
        ),
    }


def decode_published(value: Any) -> Published | None:
    """A ``published`` value (decoded JSON, or None) as typed state."""
    if value is None:
        return None
    mv, seq = value["order"]
    return Published(order=(mv, seq), record=value["record"])


def encode_published(published: Published) -> dict[str, Any]:
    return {"order": list(published.order), "record": published.record}
