"""shared.runtime.changelog_reads: which changelog partitions a recovery must read again."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.runtime.changelog_reads import GRACE_S, ChangelogRead, lost_reads


def read(received=-1, last_offset=156, position=157, silent_s=GRACE_S) -> ChangelogRead:
    return ChangelogRead(received, last_offset, position, silent_s)


def test_records_handed_out_and_never_received_are_read_again_from_the_first():
    """The stall the chaos suite caught: read to its end, nothing received."""
    assert lost_reads({"seen-5": read()}, queue_empty=True) == {"seen-5": 0}


def test_a_partial_loss_is_read_again_from_just_after_the_last_record_received():
    assert lost_reads({"p": read(received=99)}, queue_empty=True) == {"p": 100}


def test_a_partition_still_within_the_grace_time_is_left_alone():
    assert lost_reads({"p": read(silent_s=GRACE_S - 1)}, queue_empty=True) == {}


def test_nothing_is_read_again_while_the_recovery_has_records_queued():
    """Queued records are on their way; the recovery is busy, not starved."""
    assert lost_reads({"p": read()}, queue_empty=False) == {}


def test_a_partition_the_consumer_has_not_read_past_the_recovery_waits_for_its_fetch():
    """Nothing handed out and lost: the next fetch brings the records."""
    assert lost_reads({"p": read(received=99, position=100)}, queue_empty=True) == {}


def test_a_partition_without_a_position_is_left_alone():
    assert lost_reads({"p": read(position=None)}, queue_empty=True) == {}


def test_a_partition_fully_received_is_left_alone():
    assert lost_reads({"p": read(received=156)}, queue_empty=True) == {}


@given(
    received=st.integers(-1, 1000),
    last_offset=st.integers(0, 1000),
    position=st.none() | st.integers(0, 1100),
    silent_s=st.floats(0, 600),
    queue_empty=st.booleans(),
)
def test_a_read_again_starts_after_the_last_record_received_and_only_where_records_went_missing(
    received, last_offset, position, silent_s, queue_empty
):
    lost = lost_reads(
        {"p": ChangelogRead(received, last_offset, position, silent_s)}, queue_empty=queue_empty
    )
    if lost:
        assert lost == {"p": received + 1}
        assert position is not None and received + 1 < position  # records were handed out
        assert received < last_offset and queue_empty and silent_s >= GRACE_S
