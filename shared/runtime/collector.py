"""Python's cyclic garbage collector, tuned for a stream worker, and its pauses timed.

A worker allocates many containers per batch (decoded records, table values,
sends) that live as long as the batch, tens of milliseconds. With CPython's
default thresholds (700, 10, 10) a young collection runs every 700
allocations, so such objects survive two of them, reach the oldest
generation, fill it, and trigger full collections of the whole heap: in one
bench run identity_match paused 39 times for 64-216 ms (4.5 s in all), and a
full collection stalls every agent of the process. Raising the young
threshold lets batch-lived objects die young (docs/benchmarks.md, "The
garbage collector").
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

#: CPython's own thresholds; a worker's default is set in Settings.gc_thresholds.
CPYTHON_THRESHOLDS = (700, 10, 10)

Observe = Callable[[int, float], None]


class PauseTimer:
    """A ``gc.callbacks`` hook: each collection's generation and length to ``observe``."""

    def __init__(self, observe: Observe, clock: Callable[[], float] = time.perf_counter) -> None:
        self.observe = observe
        self.clock = clock
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.clock()
        elif phase == "stop" and self._started is not None:
            self.observe(int(info["generation"]), self.clock() - self._started)
            self._started = None


def tune_collector(thresholds: tuple[int, int, int], observe: Observe) -> Callable[[], None]:
    """Set the collector's thresholds and time its pauses; returns the undo."""
    before = gc.get_threshold()
    timer = PauseTimer(observe)
    gc.set_threshold(*thresholds)
    gc.callbacks.append(timer)

    def undo() -> None:
        gc.set_threshold(*before)
        if timer in gc.callbacks:
            gc.callbacks.remove(timer)

    return undo
