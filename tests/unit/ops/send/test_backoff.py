"""Retry pauses of `convmesh send` for 429 and 503."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ops.send.backoff import MAX_ATTEMPTS, MAX_S, pause_s, should_retry


def test_pauses_double_from_half_a_second() -> None:
    assert [pause_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


@given(st.integers(min_value=1, max_value=200))
def test_pauses_never_exceed_the_cap(attempt: int) -> None:
    assert 0 < pause_s(attempt) <= MAX_S


def test_a_longer_retry_after_wins() -> None:
    assert pause_s(1, "3") == 3.0 and pause_s(4, "1") == 4.0 and pause_s(1, "soon") == 0.5


def test_only_429_and_503_are_retried_and_not_forever() -> None:
    assert should_retry(429, 1) and should_retry(503, 1)
    assert not should_retry(500, 1) and not should_retry(401, 1)
    assert not should_retry(429, MAX_ATTEMPTS)
