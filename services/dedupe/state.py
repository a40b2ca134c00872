"""The dedupe service's table values, typed.

``seen`` (key: conversion_key, co-partitioned with conversions.valid): the
accepted events of one conversion key. On the wire (RocksDB and changelog) a
value is the JSON list ``[[event_time, raw_ref], ...]``; ``decode`` and
``encode`` keep that layout, so typed code needs no migration of old state.
A layout change bumps ``LAYOUT_VERSION`` and teaches ``decode`` every older one.
"""

from __future__ import annotations

from typing import Any

from shared.values import value_class

LAYOUT_VERSION = 1


@value_class(frozen=True, slots=True)
class AcceptedEvent:
    """One accepted event of a key: its event_time and the input it came from."""

    event_time: int
    #: ``topic:partition:offset`` of the conversions.raw record: tells a
    #: redelivered input (after a crash) from a new event.
    raw_ref: str


#: The accepted events of one conversion key, oldest acceptance first.
Seen = tuple[AcceptedEvent, ...]


def decode(value: Any) -> Seen:
    """A ``seen`` table value (decoded JSON, or None for a new key) as typed state."""
    if value is None:
        return ()
    return tuple(AcceptedEvent(int(when), str(ref)) for when, ref in value)


def encode(seen: Seen) -> list[list[Any]] | None:
    """The wire layout of ``seen``; None (a tombstone) when nothing is left."""
    return [[event.event_time, event.raw_ref] for event in seen] or None
