"""The in-order consumer (shared/runtime/consumer.py): no non-compacted record is skipped."""

import asyncio

from faust.types import TP

from shared.runtime.consumer import RESEEK_AFTER_S, InOrderConsumer

SOURCE = TP("ns.ads.engagements", 4)
COMPACTED = TP("ns.conversions.attributed", 4)


class Log:
    def __init__(self):
        self.warnings = []

    def warning(self, *args):
        self.warnings.append(args)


def consumer(next_offset=None, earliest=0):
    c = object.__new__(InOrderConsumer)  # the admission rule alone, without Kafka
    c.gapless_topics = frozenset({SOURCE.topic})
    c._next_offset = dict(next_offset or {})
    c._seeking = {}
    c.log = Log()
    c.sought = []

    async def earliest_offsets(*tps):
        return {tp: earliest for tp in tps}

    async def _seek(tp, offset):
        c.sought.append((tp, offset))

    c.earliest_offsets = earliest_offsets
    c._seek = _seek
    return c


def admitted(c, offsets, tp=SOURCE):
    return [o for o in offsets if asyncio.run(c.admit(tp, o))]


def test_records_in_sequence_are_delivered():
    c = consumer({SOURCE: 148})
    assert admitted(c, [148, 149, 150]) == [148, 149, 150] and c.sought == []


def test_a_jump_past_the_expected_offset_is_not_delivered_and_reads_the_gap_again():
    """The case seen after a restart: 158 arrives while 148 is the next one due."""
    c = consumer({SOURCE: 148})
    assert admitted(c, [158, 159, 160]) == []
    assert c.sought == [(SOURCE, 148)]  # sought back once, not per stale record
    assert admitted(c, [148, 149]) == [148, 149]


def test_a_repeat_of_a_delivered_record_is_not_delivered_again():
    c = consumer({SOURCE: 148})
    assert admitted(c, [148, 149, 148, 149, 150]) == [148, 149, 150]


def test_records_deleted_by_retention_before_being_read_are_skipped_with_a_warning():
    c = consumer({SOURCE: 10}, earliest=500)
    assert admitted(c, [500, 501]) == [500, 501] and c.sought == []
    assert c.log.warnings


def test_compacted_topics_keep_fausts_own_handling():
    c = consumer({COMPACTED: 5})
    assert admitted(c, [9, 12], tp=COMPACTED) == [9, 12]


def test_without_a_known_position_the_first_record_sets_it():
    c = consumer()
    assert admitted(c, [7, 8, 20]) == [7, 8]


def test_a_seek_that_never_lands_is_repeated_instead_of_stalling_the_partition(monkeypatch):
    """Stale records keep coming past the expected offset: after RESEEK_AFTER_S, seek again."""
    clock = [1000.0]
    monkeypatch.setattr("shared.runtime.consumer.time.monotonic", lambda: clock[0])
    c = consumer({SOURCE: 148})
    assert admitted(c, [158, 159]) == []
    clock[0] += RESEEK_AFTER_S + 0.1
    assert admitted(c, [160]) == []
    assert c.sought == [(SOURCE, 148), (SOURCE, 148)]
    assert admitted(c, [148]) == [148]
