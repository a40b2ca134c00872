"""shared.runtime.collector: the garbage collector's thresholds and its timed pauses."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.runtime.collector import PauseTimer, tune_collector


class Ticks:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def restored_collector() -> Iterator[None]:
    before, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.set_threshold(*before)
    gc.callbacks[:] = callbacks


def test_a_pause_is_observed_with_its_generation_and_length() -> None:
    seen: list[tuple[int, float]] = []
    clock = Ticks()
    timer = PauseTimer(lambda gen, s: seen.append((gen, s)), clock)
    timer("start", {"generation": 2})
    clock.now = 0.125
    timer("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert seen == [(2, 0.125)]


def test_a_stop_without_its_start_is_not_observed() -> None:
    """A timer added during a collection sees only its end: no length to tell."""
    seen: list[tuple[int, float]] = []
    PauseTimer(lambda gen, s: seen.append((gen, s)), Ticks())("stop", {"generation": 0})
    assert seen == []


def test_tuning_sets_the_thresholds_and_times_real_collections(restored_collector: None) -> None:
    seen: list[tuple[int, float]] = []
    undo = tune_collector((20000, 20, 20), lambda gen, s: seen.append((gen, s)))
    assert gc.get_threshold() == (20000, 20, 20)
    gc.collect()
    assert seen[-1][0] == 2 and seen[-1][1] >= 0
    undo()


def test_undo_restores_the_thresholds_and_stops_timing(restored_collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    seen: list[tuple[int, float]] = []
    undo = tune_collector((5000, 5, 5), lambda gen, s: seen.append((gen, s)))
    undo()
    gc.collect()
    assert gc.get_threshold() == (700, 10, 10)
    assert seen == []
