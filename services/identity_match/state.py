"""The identity_match service's table values, typed.

Three tables, each with the JSON layout its changelog already holds;
``decode_*`` and ``encode_*`` keep that layout (positional lists stay
positional on the wire, code uses names), so typed code needs no migration of
old state. A layout change bumps ``LAYOUT_VERSION`` and teaches the decoders
every older one. The layout did not change when user ids and click ids became
internal (``shared.contract.keys``): the same fields hold the keyed forms.

* ``keys`` (key: identifier, hash, keyed ip_ua or internal click id; co-partitioned with
  identity.lookups): ``{"signals": [[ts_ms, arrival, op, user_id, key_type,
  ad_account_id], ...], "clicks": [[ts_ms, user_id, engagement_id], ...]}``;
  no value for an identifier without signals or clicks. Values written before
  the watchers had their own table also hold ``"watchers": {name: watcher}``:
  read as if they were in ``watchers``, and moved there on the first write.
* ``watchers`` (key: ``"<identifier>|<conversion_key>|<slot>"``, in the
  identifier's partition; read by the prefix ``"<identifier>|"``): one
  conversion slot watching the identifier, ``{conversion_key, slot, gen,
  signal_type, ad_account_id, event_time, last, expires_ms}``. One key each,
  so an identifier watched by thousands of conversions (an IP+UA behind a
  carrier NAT) never makes one value that outgrows a Kafka record.
* ``conversions`` (key: conversion_key): the owner of one accepted
  conversion, ``{"conv", "gen", "mv", "slots": [[key_type, signal_type,
  identifier], ...], "answers": {"<slot>": user_id | null}, "result", "user",
  "dirty"}``.
* ``user_index`` (key: internal user id): ``[identifier, ...]``; and for a
  deleted user, under ``deletion_marker_key`` (a keyed hash of the id, in
  the same partition), ``{"deleted_at_ms"}``.

Every ``user_id`` here is the internal user id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any

from shared.contract.keys import deletion_marker
from shared.runtime.key_groups import group_key, group_prefix, owner_of
from shared.values import value_class

LAYOUT_VERSION = 1


# ---------------------------------------------------------------------- keys


@value_class(frozen=True, slots=True)
class Signal:
    """One identity signal folded into an identifier's history."""

    ts_ms: int
    #: The signal's offset in identity.signals. Every signal of one identifier
    #: comes from the one identity.signals partition its (plain) key hashes to,
    #: so the offset orders them by arrival (the fold's tie-break) and
    #: recognises a redelivered signal, however often it was forwarded.
    arrival: int
    op: str
    user_id: str
    key_type: str
    ad_account_id: str | None


@value_class(frozen=True, slots=True)
class Click:
    """One click engagement carrying the (internal) click id this state is keyed by."""

    ts_ms: int
    user_id: str
    engagement_id: str


@value_class(frozen=True, slots=True)
class Watcher:
    """A conversion slot watching this identifier until ``expires_ms``."""

    conversion_key: str
    slot: str
    gen: int
    signal_type: str
    ad_account_id: str | None
    #: The conversion's event_time (seconds): the identifier is folded as of it.
    event_time: int
    #: The user last answered to the conversion (None: no user).
    last: str | None
    expires_ms: int

    @property
    def name(self) -> str:
        return watcher_name(self.conversion_key, self.slot)


@value_class(frozen=True, slots=True)
class KeyState:
    """Everything known about one identifier."""

    #: In fold order: (ts_ms, arrival).
    signals: tuple[Signal, ...] = ()
    clicks: tuple[Click, ...] = ()
    #: By ``Watcher.name``.
    watchers: Mapping[str, Watcher] = field(default_factory=dict)


WATCHER_FIELDS = (
    "conversion_key",
    "slot",
    "gen",
    "signal_type",
    "ad_account_id",
    "event_time",
    "last",
    "expires_ms",
)


def decode_watcher(value: Any) -> Watcher:
    return Watcher(**{f: value.get(f) for f in WATCHER_FIELDS})


def encode_watcher(watcher: Watcher) -> dict[str, Any]:
    return {f: getattr(watcher, f) for f in WATCHER_FIELDS}


def watcher_name(conversion_key: str, slot: str) -> str:
    """A watcher's name among its identifier's watchers (``Watcher.name``)."""
    return f"{conversion_key}|{slot}"


#: A ``watchers`` key is ``"{identifier}|{Watcher.name}"`` (shared.runtime.key_groups).
watcher_prefix = group_prefix
watcher_key = group_key
identifier_of_watcher_key = owner_of


def decode_keys(value: Any, watchers: Mapping[str, Watcher] | None = None) -> KeyState:
    """An identifier's state: its ``keys`` value (decoded JSON, or None for a new
    identifier) and its watchers of the ``watchers`` table, by ``Watcher.name``.

    A value of the old layout brings its own watchers; one also in the table
    is the table's (written later).
    """
    inline = (value or {}).get("watchers", {})
    by_name = {name: decode_watcher(w) for name, w in inline.items()}
    by_name.update(watchers or {})
    return KeyState(
        signals=tuple(
            Signal(int(ts), int(arrival), op, user, key_type, account)
            for ts, arrival, op, user, key_type, account in (value or {}).get("signals", ())
        ),
        clicks=tuple(
            Click(int(ts), user, eng) for ts, user, eng in (value or {}).get("clicks", ())
        ),
        watchers=by_name,
    )


def encode_keys(state: KeyState | None) -> dict[str, Any] | None:
    """The wire layout of a ``keys`` value (its watchers go to their own table);
    None (a tombstone, or no value) for an identifier without signals or clicks."""
    if state is None or not (state.signals or state.clicks):
        return None
    return {
        "signals": [
            [s.ts_ms, s.arrival, s.op, s.user_id, s.key_type, s.ad_account_id]
            for s in state.signals
        ],
        "clicks": [[c.ts_ms, c.user_id, c.engagement_id] for c in state.clicks],
    }


# --------------------------------------------------------------- conversions


@value_class(frozen=True, slots=True)
class Slot:
    """One identifier of a conversion, in matching priority order."""

    key_type: str
    signal_type: str
    #: Empty once a deletion scrubbed the conversion's identifiers.
    identifier: str


@value_class(frozen=True, slots=True)
class OwnerState:
    """The owner of one accepted conversion (per conversion_key)."""

    #: The accepted conversion as dedupe forwarded it, without its identifiers
    #: (``ids``: they are in ``slots``; states written before 2026-12-05 still hold
    #: them, until a deletion or a new acceptance).
    conv: Mapping[str, Any]
    #: Acceptance generation: tells answers for this acceptance from stale ones.
    gen: int
    #: Match version (a stamp), carried over when a new acceptance supersedes.
    mv: int
    slots: tuple[Slot, ...]
    #: By slot index (a string, as on the wire): the user, or None for no user.
    answers: Mapping[str, str | None]
    #: The last result sent: ``{"status": "matched", "key_type", "user_id"}``
    #: or ``{"status": "unidentified", "reason"}``; None before the first.
    result: Mapping[str, Any] | None
    #: The user the conversion is assigned to (None: unidentified or none yet).
    user: str | None
    #: A new acceptance: its result is sent even if it equals the last one.
    dirty: bool


def decode_owner(value: Any) -> OwnerState | None:
    """A ``conversions`` table value (decoded JSON) as typed state; None for a new key."""
    if value is None:
        return None
    return OwnerState(
        conv=value["conv"],
        gen=int(value["gen"]),
        mv=int(value["mv"]),
        slots=tuple(Slot(*slot) for slot in value["slots"]),
        answers=value["answers"],
        result=value["result"],
        user=value.get("user"),
        dirty=bool(value.get("dirty", False)),
    )


def encode_owner(state: OwnerState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "conv": dict(state.conv),
        "gen": state.gen,
        "mv": state.mv,
        "slots": [[s.key_type, s.signal_type, s.identifier] for s in state.slots],
        "answers": dict(state.answers),
        "result": dict(state.result) if state.result is not None else None,
        "user": state.user,
        "dirty": state.dirty,
    }


# ---------------------------------------------------------------- user_index

#: The identifiers one user was seen with, first seen first.
UserIndex = tuple[str, ...]


def decode_user_index(value: Any) -> UserIndex:
    return tuple(value) if value is not None else ()


def encode_user_index(index: UserIndex) -> list[str] | None:
    """The wire layout; None (a tombstone) when the user has no identifier left."""
    return list(index) or None


def deletion_marker_key(user_id: str, identifier_key: str) -> bytes:
    """Where the user index remembers that a user was deleted.

    Not the user's id: after a deletion no state may hold it. A keyed hash of
    it (``shared.contract.keys.deletion_marker``), written in the partition of
    the user's inputs (the input's, as every table write is), so the user's
    later inputs find it.
    """
    return deletion_marker(user_id, identifier_key).encode()


def decode_deletion_marker(value: Any) -> int | None:
    """The time up to which the user was deleted, or None (never deleted)."""
    return int(value["deleted_at_ms"]) if value is not None else None


def encode_deletion_marker(deleted_at_ms: int) -> dict[str, int]:
    return {"deleted_at_ms": deleted_at_ms}
