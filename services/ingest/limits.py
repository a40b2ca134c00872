"""Abuse limits of one ingest worker's API: calls per minute and requests in flight.

Both are per ad account and in the worker's memory (plain bookkeeping, no I/O), so
that one advertiser cannot spend what every other advertiser of the worker needs.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from enum import Enum


class RateLimiter:
    """A token bucket per key (ad account), in one worker's memory.

    ``per_minute`` calls are refilled evenly over a minute and at most ``burst`` (default:
    ``per_minute``) can be spent at once. Buckets are per worker: with N workers behind one
    port the effective limit is up to N times higher. ``per_minute <= 0`` disables it.
    """

    def __init__(
        self,
        per_minute: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.capacity = float(burst if burst is not None else per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}

    def allow(self, key: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.capacity, now]
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def retry_after_s(self, key: str) -> int:
        """Whole seconds until the next call of ``key`` would be allowed."""
        bucket = self._buckets.get(key)
        if bucket is None or self.rate <= 0:
            return 1
        missing = max(0.0, 1.0 - bucket[0])
        return max(1, int(missing / self.rate + 0.999))


class Refusal(Enum):
    """Why a request got no in-flight slot."""

    WORKER_FULL = "worker_full"
    ACCOUNT_FULL = "account_full"


def account_slots(max_in_flight: int, account_share: float) -> int:
    """Slots one ad account may hold: ``ceil(max_in_flight * share)``, at least 1.

    A share of 1 or more leaves only the worker's bound.
    """
    share = min(1.0, max(0.0, account_share))
    return max(1, math.ceil(max_in_flight * share))


class InFlight:
    """The worker's in-flight bound, with a cap on what one ad account may hold.

    Without the cap, one token holder whose requests trickle their bodies could
    hold every slot of the worker and every other advertiser would get 503.
    """

    def __init__(self, max_in_flight: int, account_share: float) -> None:
        self.limit = max_in_flight
        self.per_account = account_slots(max_in_flight, account_share)
        self.held = 0
        self._by_account: Counter[str] = Counter()

    def acquire(self, account: str) -> Refusal | None:
        """Take a slot for ``account``; None when taken, else why not (nothing taken)."""
        if self.held >= self.limit:
            return Refusal.WORKER_FULL
        if self._by_account[account] >= self.per_account:
            return Refusal.ACCOUNT_FULL
        self.held += 1
        self._by_account[account] += 1
        return None

    def release(self, account: str) -> None:
        """Give back a slot that ``acquire`` gave ``account``."""
        self.held -= 1
        self._by_account[account] -= 1
        if self._by_account[account] <= 0:
            del self._by_account[account]  # a worker sees many accounts: keep only busy ones

    def held_by(self, account: str) -> int:
        return self._by_account.get(account, 0)
