"""Deduplication rules of the contract, as pure functions over a small state.

Dedup key: ``conversion_key`` = (ad_account_id, event_name, event_id, scope).
An event is a duplicate when an event with the same key was *accepted* before
it and their ``event_time`` values differ by at most the window. The first
accepted event wins; an event whose key was accepted only outside the window
is accepted too (and supersedes the earlier result under the same key).

State per key: the accepted events' ``[event_time, raw_ref]`` pairs. The
``raw_ref`` (input topic:partition:offset) recognises a redelivered input
after a crash, which is neither a new acceptance nor a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.contract.limits import MAX_EVENT_AGE_S


class Decision(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    #: The same input record seen again (at-least-once redelivery): forward it
    #: again so a send lost in a crash is not lost forever; downstream ignores
    #: a conversion it already has.
    REDELIVERED = "redelivered"


Accepted = list[list[Any]]  # [[event_time, raw_ref], ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    state: Accepted
    #: For a duplicate: the event_time of the accepted event it duplicates.
    original_event_time: int | None = None


def decide(state: Accepted | None, event_time: int, raw_ref: str, window_s: int) -> Outcome:
    """Classify one valid conversion against the accepted events of its key."""
    accepted = state or []
    for _when, ref in accepted:
        if ref == raw_ref:
            return Outcome(Decision.REDELIVERED, accepted)
    for when, _ref in accepted:
        if abs(event_time - when) <= window_s:
            return Outcome(Decision.DUPLICATE, accepted, original_event_time=when)
    return Outcome(Decision.ACCEPTED, [*accepted, [event_time, raw_ref]])


def prune(state: Accepted, now_s: int, window_s: int) -> Accepted:
    """Drop accepted events no future valid event can fall within the window of."""
    oldest_useful = now_s - MAX_EVENT_AGE_S - window_s
    return [entry for entry in state if entry[0] >= oldest_useful]
