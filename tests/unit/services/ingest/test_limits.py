"""services.ingest.limits: the rate limiter and the in-flight bound with its per-account share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.limits import InFlight, RateLimiter, Refusal, account_slots


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_the_burst_then_refuses():
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after_s("a") == 1


def test_rate_limiter_refills_at_the_per_minute_rate():
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.allow("a") and not limiter.allow("a")
    clock.now += 0.5
    assert not limiter.allow("a")
    clock.now += 0.6
    assert limiter.allow("a")


def test_rate_limiter_buckets_are_per_ad_account():
    limiter = RateLimiter(per_minute=60, burst=1, clock=Clock())
    assert limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")


def test_rate_limiter_default_burst_is_a_minute_of_calls():
    limiter = RateLimiter(per_minute=5000, clock=Clock())
    assert sum(limiter.allow("a") for _ in range(5001)) == 5000


def test_rate_limiter_disabled_with_zero():
    limiter = RateLimiter(per_minute=0, clock=Clock())
    assert all(limiter.allow("a") for _ in range(10_000))


# ------------------------------------------------------------------ in-flight bound


def test_account_slots_is_the_ceiling_of_the_share():
    assert account_slots(64, 0.25) == 16
    assert account_slots(10, 0.25) == 3
    assert account_slots(64, 0.001) == 1
    assert account_slots(64, 1.0) == 64
    assert account_slots(64, 5.0) == 64


def test_one_account_gets_at_most_its_share():
    slots = InFlight(max_in_flight=8, account_share=0.25)
    assert [slots.acquire("a") for _ in range(3)] == [None, None, Refusal.ACCOUNT_FULL]
    assert slots.held == 2 and slots.held_by("a") == 2


def test_other_accounts_still_get_slots_while_one_is_at_its_share():
    slots = InFlight(max_in_flight=8, account_share=0.25)
    for _ in range(2):
        slots.acquire("greedy")
    assert slots.acquire("greedy") is Refusal.ACCOUNT_FULL
    assert slots.acquire("other") is None


def test_the_worker_bound_holds_over_all_accounts():
    slots = InFlight(max_in_flight=3, account_share=0.5)
    assert [slots.acquire(account) for account in "abcd"] == [None, None, None, Refusal.WORKER_FULL]
    assert slots.held == 3


def test_a_released_slot_can_be_taken_again():
    slots = InFlight(max_in_flight=4, account_share=0.25)
    assert slots.acquire("a") is None
    assert slots.acquire("a") is Refusal.ACCOUNT_FULL
    slots.release("a")
    assert slots.held == 0 and slots.held_by("a") == 0
    assert slots.acquire("a") is None


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abc")), max_size=60))
def test_slots_never_exceed_either_bound(steps):
    """Any sequence of acquire/release keeps both bounds and the counts consistent."""
    slots = InFlight(max_in_flight=5, account_share=0.4)
    mine: list[str] = []
    for take, account in steps:
        if take:
            if slots.acquire(account) is None:
                mine.append(account)
        elif account in mine:
            mine.remove(account)
            slots.release(account)
        assert slots.held == len(mine) <= 5
        assert all(slots.held_by(a) == mine.count(a) <= 2 for a in "abc")
