"""Version numbers that keep growing across crashes.

A version kept as a counter in a table can be *recomputed* after a kill -9:
the table may come back older than what was already published, and the
inputs it re-reads can interleave differently across topics, so the counter
can reach the same value again for a different content. A consumer that
keeps "the highest version" would then drop a genuinely newer result.

Every version is therefore a stamp: one more than the previous one, and never
below the wall clock in milliseconds. A recomputation happens seconds later
(restart, rebalance), so its stamps exceed everything issued before the
crash, provided the clocks of the workers agree to within that time.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)


def next_stamp(previous: int | None, at_ms: int) -> int:
    """A version greater than ``previous`` and not below ``at_ms``."""
    return max((previous or 0) + 1, at_ms)
