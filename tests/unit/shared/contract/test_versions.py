"""Version stamps: greater than the previous one, never below the clock."""

from hypothesis import given
from hypothesis import strategies as st

from shared.contract.versions import next_stamp

stamps = st.integers(min_value=0, max_value=2**52)


@given(previous=stamps, at_ms=stamps)
def test_stamp_exceeds_the_previous_one_and_the_clock(previous: int, at_ms: int) -> None:
    stamp = next_stamp(previous, at_ms)
    assert stamp > previous and stamp >= at_ms


def test_a_recomputation_later_outranks_more_steps_taken_before_a_crash() -> None:
    """Five stamps issued in one millisecond before a crash, one a second after
    it from the state as it was before them: the late one still ranks highest."""
    before = 1_800_000_000_000
    issued = before
    for _ in range(5):
        issued = next_stamp(issued, before)
    assert next_stamp(before, before + 1_000) > issued


def test_without_a_previous_stamp_the_clock_is_the_stamp() -> None:
    assert next_stamp(None, 42) == 42
