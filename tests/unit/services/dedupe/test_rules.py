"""Deduplication rules (services/dedupe/rules.py)."""

from hypothesis import given
from hypothesis import strategies as st

from services.dedupe.rules import (
    Decision,
    decide,
    expiry_request,
    on_expiry,
    on_valid,
    prune,
    sweep,
    sweep_as_of,
)
from services.dedupe.state import AcceptedEvent, decode, encode
from shared.contract.limits import MAX_BACKFILL_S, MAX_EVENT_AGE_S, MAX_FUTURE_S

WINDOW = 172_800


def test_first_event_of_a_key_is_accepted():
    outcome = decide((), 1_000_000, "raw:0:1", WINDOW)
    assert outcome.decision is Decision.ACCEPTED
    assert outcome.state == (AcceptedEvent(1_000_000, "raw:0:1"),)


def test_event_within_window_of_an_accepted_one_is_a_duplicate():
    state = decide((), 1_000_000, "raw:0:1", WINDOW).state
    outcome = decide(state, 1_000_000 + WINDOW, "raw:0:2", WINDOW)
    assert outcome.decision is Decision.DUPLICATE
    assert outcome.original_event_time == 1_000_000
    assert outcome.state == state


def test_window_is_symmetric_in_event_time():
    state = decide((), 1_000_000, "raw:0:1", WINDOW).state
    assert decide(state, 1_000_000 - WINDOW, "raw:0:2", WINDOW).decision is Decision.DUPLICATE


def test_event_just_outside_window_is_accepted_and_kept_beside_the_first():
    state = decide((), 1_000_000, "raw:0:1", WINDOW).state
    outcome = decide(state, 1_000_000 + WINDOW + 1, "raw:0:2", WINDOW)
    assert outcome.decision is Decision.ACCEPTED
    assert len(outcome.state) == 2


def test_redelivered_input_is_neither_accepted_nor_duplicate():
    state = decide((), 1_000_000, "raw:0:1", WINDOW).state
    outcome = decide(state, 1_000_000, "raw:0:1", WINDOW)
    assert outcome.decision is Decision.REDELIVERED
    assert outcome.state == state


def test_duplicates_are_judged_against_accepted_events_only():
    """A duplicate is not remembered, so it cannot make a later event a duplicate."""
    state = decide((), 1_000_000, "raw:0:1", WINDOW).state
    decide(state, 1_000_000 + WINDOW, "raw:0:2", WINDOW)  # duplicate, state unchanged
    outcome = decide(state, 1_000_000 + 2 * WINDOW, "raw:0:3", WINDOW)
    assert outcome.decision is Decision.ACCEPTED


def test_prune_drops_entries_no_future_event_can_reach():
    now = 10_000_000
    old = now - MAX_EVENT_AGE_S - WINDOW - 1
    kept = prune(decode([[old, "a"], [now, "b"]]), now, WINDOW)
    assert encode(kept) == [[now, "b"]]


def test_the_sweep_prunes_as_of_the_clock_for_live_events():
    now = 10_000_000
    assert sweep_as_of(now - 5, now) == now - 5 - MAX_FUTURE_S
    assert sweep_as_of(now + MAX_FUTURE_S, now) == now  # an event an hour ahead
    assert sweep_as_of(None, now) == now  # nothing stored


def test_the_sweep_never_looks_back_further_than_the_backfill_horizon():
    now = 1_800_000_000
    assert sweep_as_of(1_000, now) == now - MAX_BACKFILL_S  # mis-dated keys still go


def test_the_sweep_prunes_as_of_the_streams_time_for_a_backfill():
    """A year-old accepted event stays while the newest events are a year old too."""
    now = 40_000_000
    newest = now - 365 * 86_400
    as_of = sweep_as_of(newest, now)
    state = decode([[newest - 10, "a"]])
    assert prune(state, as_of, WINDOW) == state
    assert prune(state, now, WINDOW) == ()  # what the clock alone would do


def test_a_partition_with_live_events_is_swept_as_of_the_clock():
    """A back-filled key beside live ones in one partition goes, as the clock says."""
    now = 40_000_000
    live, old = decode([[now - 60, "a"]]), decode([[now - 365 * 86_400, "b"]])
    as_of, keys = sweep([(b"live", live), (b"old", old)], now, WINDOW)
    assert as_of == now - 60 - MAX_FUTURE_S and keys == [b"old"]


def test_a_partition_of_backfilled_events_keeps_them():
    now = 40_000_000
    old = decode([[now - 365 * 86_400, "b"]])
    assert sweep([(b"old", old)], now, WINDOW)[1] == []
    assert sweep([], now, WINDOW) == (now, [])


def test_an_expiry_request_is_applied_as_of_its_time_never_later_than_the_clock():
    now = 40_000_000
    state = decode([[now - 365 * 86_400, "a"]])
    backfill = expiry_request(now - 365 * 86_400)
    assert on_expiry(state, backfill, now, WINDOW) == state
    assert on_expiry(state, expiry_request(now + 10**9), now, WINDOW) == ()
    assert on_expiry(state, {"op": "expire"}, now, WINDOW) == ()  # an older worker's


@given(st.lists(st.integers(min_value=0, max_value=10 * WINDOW), min_size=1, max_size=30))
def test_accepted_events_are_pairwise_farther_apart_than_the_window(times):
    state: tuple[AcceptedEvent, ...] = ()
    for offset, when in enumerate(times):
        state = decide(state, when, f"raw:0:{offset}", WINDOW).state
    accepted = sorted(event.event_time for event in state)
    assert state[0].event_time == times[0]  # the first event is always accepted
    assert all(b - a > WINDOW for a, b in zip(accepted, accepted[1:], strict=False))


@given(st.lists(st.integers(min_value=0, max_value=10 * WINDOW), min_size=1, max_size=30))
def test_every_event_is_accepted_or_duplicate_exactly_once(times):
    state: tuple[AcceptedEvent, ...] = ()
    counts = {Decision.ACCEPTED: 0, Decision.DUPLICATE: 0}
    for offset, when in enumerate(times):
        outcome = decide(state, when, f"raw:0:{offset}", WINDOW)
        counts[outcome.decision] += 1
        state = outcome.state
    assert counts[Decision.ACCEPTED] + counts[Decision.DUPLICATE] == len(times)
    assert counts[Decision.ACCEPTED] == len(state)


def test_state_keeps_its_wire_layout():
    """Typed state encodes to the JSON layout the changelog already holds."""
    wire = [[1_000_000, "raw:0:1"], [2_000_000, "raw:3:9"]]
    assert encode(decode(wire)) == wire
    assert decode(None) == () and encode(()) is None


CONV = {
    "conversion_key": "1:lead:e-1:online",
    "raw_ref": "raw:0:1",
    "source": "api",
    "ad_account_id": "1",
    "event_time": 1_000_000,
}


def test_on_valid_forwards_an_accepted_record_as_it_came():
    state, decision, sends = on_valid((), b"k", CONV, b"raw-bytes", WINDOW)
    assert decision is Decision.ACCEPTED
    assert [(s.topic, s.key, s.value) for s in sends] == [
        ("conversions.accepted", b"k", b"raw-bytes")
    ]
    assert state == (AcceptedEvent(1_000_000, "raw:0:1"),)


def test_on_valid_audits_a_duplicate_without_changing_state():
    first, _, _ = on_valid((), b"k", CONV, b"a", WINDOW)
    again = {**CONV, "raw_ref": "raw:0:2", "event_time": 1_000_005}
    state, decision, sends = on_valid(first, b"k", again, b"b", WINDOW)
    assert decision is Decision.DUPLICATE and state == first
    assert sends[0].topic == "conversions.duplicates"
    assert sends[0].value["original_event_time"] == 1_000_000
