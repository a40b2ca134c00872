"""Deduplication rules of the contract, as pure functions over a small state.

Dedup key: ``conversion_key`` = (ad_account_id, event_name, event_id, scope).
An event is a duplicate when an event with the same key was *accepted* before
it and their ``event_time`` values differ by at most the window. The first
accepted event wins; an event whose key was accepted only outside the window
is accepted too (and supersedes the earlier result under the same key).

State per key: the accepted events (``services.dedupe.state``). The
``raw_ref`` (input topic:partition:offset) recognises a redelivered input
after a crash, which is neither a new acceptance nor a duplicate.

``on_valid`` and ``on_expiry`` are the steps the agent runs: state and one
input in, the new state and the records to send out.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from services.dedupe.state import AcceptedEvent, Seen
from shared.contract.limits import MAX_BACKFILL_S, MAX_EVENT_AGE_S, MAX_FUTURE_S
from shared.contract.records import Send
from shared.values import value_class


class Decision(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    #: The same input record seen again (at-least-once redelivery): forward it
    #: again so a send lost in a crash is not lost forever; downstream ignores
    #: a conversion it already has.
    REDELIVERED = "redelivered"


@value_class(frozen=True, slots=True)
class Outcome:
    decision: Decision
    state: Seen
    #: For a duplicate: the event_time of the accepted event it duplicates.
    original_event_time: int | None = None


def decide(state: Seen, event_time: int, raw_ref: str, window_s: int) -> Outcome:
    """Classify one valid conversion against the accepted events of its key."""
    for accepted in state:
        if accepted.raw_ref == raw_ref:
            return Outcome(Decision.REDELIVERED, state)
    for accepted in state:
        if abs(event_time - accepted.event_time) <= window_s:
            return Outcome(Decision.DUPLICATE, state, original_event_time=accepted.event_time)
    return Outcome(Decision.ACCEPTED, (*state, AcceptedEvent(event_time, raw_ref)))


def prune(state: Seen, now_s: int, window_s: int) -> Seen:
    """Drop accepted events no future valid event can fall within the window of.

    ``now_s`` stands for the ``received_at`` of the events still to come: the sweep's
    ``as_of_s`` (``sweep_as_of``), not simply the clock.
    """
    oldest_useful = now_s - MAX_EVENT_AGE_S - window_s
    return tuple(accepted for accepted in state if accepted.event_time >= oldest_useful)


def duplicate_audit(conv: dict[str, Any], original_event_time: int | None) -> dict[str, Any]:
    """The conversions.duplicates record of a duplicate (no identifiers)."""
    return {
        "conversion_key": conv["conversion_key"],
        "raw_ref": conv["raw_ref"],
        "source": conv["source"],
        "ad_account_id": conv["ad_account_id"],
        "event_time": conv["event_time"],
        "original_event_time": original_event_time,
    }


def on_valid(
    state: Seen, key: bytes, conv: dict[str, Any], raw: bytes, window_s: int
) -> tuple[Seen, Decision, list[Send]]:
    """One conversions.valid record: the key's new state, the decision, what to send.

    An accepted or redelivered record is forwarded as it came (``raw``): a
    redelivery is sent again, and its state written again, because after a
    kill -9 the first send, or the changelog record of the state, may never
    have left.
    """
    outcome = decide(state, int(conv["event_time"]), conv["raw_ref"], window_s)
    if outcome.decision is Decision.DUPLICATE:
        audit = duplicate_audit(conv, outcome.original_event_time)
        return state, outcome.decision, [Send("conversions.duplicates", key, audit)]
    return outcome.state, outcome.decision, [Send("conversions.accepted", key, raw)]


def sweep_as_of(newest_event_time: int | None, now_s: int) -> int:
    """The time the sweep prunes as of: the clock, or the stream's own time when that
    is older (a back-fill or a replay of old events, valid relative to their own
    ``received_at_ms``).

    Events still to come are taken to be received no earlier than those seen, and an
    event is at most MAX_FUTURE_S ahead of its ``received_at``: so the newest accepted
    event_time less that hour bounds their ``received_at`` from below. Never further
    back than MAX_BACKFILL_S, so that stale or mis-dated keys still go.
    """
    if newest_event_time is None:
        return now_s
    return max(min(now_s, newest_event_time - MAX_FUTURE_S), now_s - MAX_BACKFILL_S)


def sweep(
    states: Sequence[tuple[bytes, Seen]], now_s: int, window_s: int
) -> tuple[int, list[bytes]]:
    """One partition's sweep: the time it prunes as of, and the keys with something
    to drop then."""
    times = (accepted.event_time for _, seen in states for accepted in seen)
    as_of_s = sweep_as_of(max(times, default=None), now_s)
    return as_of_s, [key for key, seen in states if prune(seen, as_of_s, window_s) != seen]


def expiry_request(as_of_s: int) -> dict[str, Any]:
    """The dedupe.expiry value the sweep sends to a key's partition."""
    return {"op": "expire", "as_of_s": as_of_s}


def on_expiry(state: Seen, request: dict[str, Any], now_s: int, window_s: int) -> Seen:
    """A dedupe.expiry request: the key's state without what can never match again,
    as of the request's ``as_of_s`` (never later than the clock; a request without
    one, from a worker before it, means the clock)."""
    as_of = request.get("as_of_s")
    as_of_s = min(now_s, as_of) if type(as_of) is int else now_s
    return prune(state, as_of_s, window_s)
