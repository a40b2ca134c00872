"""The in-order consumer (shared/runtime/consumer.py): no non-compacted record is skipped."""

import asyncio
import types
from collections import defaultdict

from aiokafka.consumer.fetcher import Fetcher, FetchResult
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition
from faust.types import TP

from shared.runtime.consumer import (
    HOLE_GRACE_S,
    RESEEK_AFTER_S,
    DeliverableNow,
    InOrderConsumer,
)

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


def test_a_lost_seek_is_repeated_by_the_timer_even_when_no_record_arrives(monkeypatch):
    """The partition's last records were fetched before the seek: nothing else would repeat it."""
    clock = [1000.0]
    monkeypatch.setattr("shared.runtime.consumer.time.monotonic", lambda: clock[0])
    c = consumer({SOURCE: 148})
    assert admitted(c, [158, 159]) == []
    assert asyncio.run(c.reseek_lost(clock[0] + 1.0)) == []  # not yet: it may still land
    assert asyncio.run(c.reseek_lost(clock[0] + RESEEK_AFTER_S)) == [(SOURCE, 148)]
    assert c.sought == [(SOURCE, 148), (SOURCE, 148)]
    assert admitted(c, [148]) == [148]
    assert asyncio.run(c.reseek_lost(clock[0] + 10 * RESEEK_AFTER_S)) == []  # it landed


def test_a_repeated_seek_that_fails_is_dropped_and_logged():
    """E.g. the partition was revoked meanwhile: the rebalance seeks it anyway."""
    c = consumer({SOURCE: 148})
    c._seeking[SOURCE] = (148, 0.0)

    async def refused(tp, offset):
        raise RuntimeError("not assigned")

    c._seek = refused
    assert asyncio.run(c.reseek_lost(RESEEK_AFTER_S)) == [(SOURCE, 148)]
    assert c._seeking == {} and c.log.warnings


def committing(acked, committed, tp=SOURCE):
    """A consumer whose ack bookkeeping for ``tp`` is given (Faust's own structures)."""
    c = consumer()
    c._acked = defaultdict(list, {tp: list(acked)})
    c._acked_index = defaultdict(set, {tp: set(acked)})
    c._committed_offset = defaultdict(lambda: None, {tp: committed})
    c._gap = defaultdict(list)
    c._holes = {}
    c.error_lines = []
    c.log.error = lambda *args: c.error_lines.append(args)

    async def seek(tp, offset):
        c.sought.append((tp, offset))

    c.seek = seek
    return c


def test_a_commit_never_passes_an_unacked_record_of_a_gapless_topic():
    """Faust would commit 103 with 100 never acked (its test is min(acked) - committed > 1)."""
    assert committing([101, 102], committed=100)._new_offset(SOURCE) is None


def test_a_commit_covers_the_acked_run_from_the_committed_offset():
    assert committing([100, 101, 102], committed=100)._new_offset(SOURCE) == 103


def test_a_partition_held_by_an_unacked_record_is_read_again_after_the_grace_time():
    c = committing([105, 106], committed=100)
    assert asyncio.run(c.heal_stalled(1000.0)) == []  # first seen: maybe a batch in flight
    assert asyncio.run(c.heal_stalled(1000.0 + HOLE_GRACE_S)) == [(SOURCE, 100, 105)]
    assert c.sought == [(SOURCE, 100)] and c.error_lines


def test_a_partition_whose_commit_moves_on_is_not_stalled():
    c = committing([105, 106], committed=100)
    c.stalled(1000.0)
    c._committed_offset[SOURCE] = 107
    c._acked[SOURCE] = [108]
    assert c.stalled(1000.0 + HOLE_GRACE_S) == []


class Message:
    def __init__(self, tp, offset):
        self.tp = tp
        self.offset = offset


def reading(next_offset, committed, acked=(), in_hand=()):
    """A consumer that has delivered ``SOURCE`` up to ``next_offset`` - 1."""
    c = committing(acked, committed)
    c._next_offset = {SOURCE: next_offset}
    c._unacked_messages = {Message(tp, offset) for tp, offset in in_hand}
    c._unaccounted = {}
    return c


def test_records_delivered_past_the_commit_and_found_nowhere_are_read_again():
    """The kill -9 stall: a partition's last records were dropped from a stream queue."""
    c = reading(next_offset=289, committed=100)
    assert asyncio.run(c.heal_lost(1000.0, queued=set())) == []  # first seen: maybe in transit
    assert asyncio.run(c.heal_lost(1000.0 + HOLE_GRACE_S, queued=set())) == [(SOURCE, 100, 289)]
    assert c.sought == [(SOURCE, 100)] and c.error_lines


def test_records_waiting_in_a_stream_queue_are_not_lost():
    c = reading(next_offset=289, committed=100)
    c.lost(1000.0, queued={SOURCE})
    assert c.lost(1000.0 + HOLE_GRACE_S, queued={SOURCE}) == []


def test_records_in_an_agents_hands_are_not_lost():
    c = reading(next_offset=289, committed=100, in_hand=[(SOURCE, 100)])
    c.lost(1000.0, queued=set())
    assert c.lost(1000.0 + HOLE_GRACE_S, queued=set()) == []


def test_records_acked_and_waiting_for_the_commit_are_not_lost():
    c = reading(next_offset=289, committed=100, acked=[100, 101])
    c.lost(1000.0, queued=set())
    assert c.lost(1000.0 + HOLE_GRACE_S, queued=set()) == []


def test_a_partition_read_up_to_its_commit_has_nothing_lost():
    c = reading(next_offset=100, committed=100)
    c.lost(1000.0, queued=set())
    assert c.lost(1000.0 + HOLE_GRACE_S, queued=set()) == []


def test_a_partition_that_reads_on_meanwhile_is_timed_again():
    """Progress (a new next offset) restarts the grace time: only a standstill is a loss."""
    c = reading(next_offset=289, committed=100)
    c.lost(1000.0, queued=set())
    c._next_offset[SOURCE] = 300
    assert c.lost(1000.0 + HOLE_GRACE_S, queued=set()) == []
    assert c.lost(1000.0 + 2 * HOLE_GRACE_S, queued=set()) == [(SOURCE, 100, 300)]


def test_what_an_earlier_assignment_left_below_the_commit_does_not_hide_a_loss():
    """An ack or a held record below the committed offset is not one of the lost records."""
    c = reading(next_offset=289, committed=100, acked=[97], in_hand=[(SOURCE, 98)])
    c.lost(1000.0, queued=set())
    assert c.lost(1000.0 + HOLE_GRACE_S, queued=set()) == [(SOURCE, 100, 289)]


def test_a_read_again_whose_seek_fails_is_logged_and_left_to_the_rebalance():
    """A partition revoked meanwhile: the seek raises, the timer goes on."""
    c = reading(next_offset=289, committed=100)

    async def revoked(tp, offset):
        raise RuntimeError("not assigned")

    c.seek = revoked
    c.lost(1000.0, queued=set())
    assert asyncio.run(c.heal_lost(1000.0 + HOLE_GRACE_S, queued=set())) == [(SOURCE, 100, 289)]
    assert any("seek failed" in str(args[0]) for args in c.log.warnings)


CHANGELOG = TP("ns-convmesh-dedupe-seen-changelog", 5)


class FakeRecovery:
    def __init__(self, received, last_offset, started=0.0, received_at=None):
        self.in_recovery = True
        self._recovery_started_at = started
        self._active_events_received_at = dict(received_at or {})
        self.active_tps = {CHANGELOG}
        self.active_offsets = {CHANGELOG: received}
        self.active_highwaters = {CHANGELOG: last_offset}


class FakeTables:
    def __init__(self, recovery, queued=()):
        self._recovery = recovery
        self.changelog_queue = asyncio.Queue()
        for event in queued:
            self.changelog_queue.put_nowait(event)


class FakeApp:
    def __init__(self, tables, generation=6):
        self.tables = tables
        self.consumer_generation_id = generation


class ErrorLog(Log):
    def __init__(self):
        super().__init__()
        self.errors = []

    def error(self, *args):
        self.errors.append(args)


def changelog_consumer(recovery, position, queued=()):
    c = consumer()
    c.log = ErrorLog()
    c.app = FakeApp(FakeTables(recovery, queued))
    c._handed_out_to = lambda tp: position

    async def seek(tp, offset):
        c.sought.append((tp, offset))

    c.seek = seek
    return c


def test_changelog_records_handed_out_and_never_received_are_read_again():
    """The chaos stall: seen-changelog 5 read to 157, the recovery still at -1 after 30 s."""
    c = changelog_consumer(FakeRecovery(received=-1, last_offset=156), position=157)
    assert asyncio.run(c.reread_lost_changelog(now=60.0)) == {CHANGELOG: 0}
    assert c.sought == [(CHANGELOG, 0)]
    assert "changelog_records_lost" in c.log.errors[0][0]


def test_a_changelog_partition_that_received_records_lately_is_not_read_again():
    recovery = FakeRecovery(received=40, last_offset=156, received_at={CHANGELOG: 55.0})
    c = changelog_consumer(recovery, position=157)
    assert asyncio.run(c.reread_lost_changelog(now=60.0)) == {}
    assert c.sought == []


def test_changelog_records_still_queued_for_the_recovery_are_not_read_again():
    c = changelog_consumer(FakeRecovery(-1, 156), position=157, queued=["an event"])
    assert asyncio.run(c.reread_lost_changelog(now=60.0)) == {}


def test_a_worker_not_in_recovery_reads_no_changelog_again():
    recovery = FakeRecovery(-1, 156)
    recovery.in_recovery = False
    c = changelog_consumer(recovery, position=157)
    assert asyncio.run(c.reread_lost_changelog(now=60.0)) == {}


class FlowOf:
    def __init__(self, active=True):
        self.flow_active = active


class PartitionState:
    paused = False

    def __init__(self, position):
        self.position = position

    def consumed_to(self, offset):
        self.position = offset


class Assignment:
    active = True

    def __init__(self, states):
        self.states = states

    def state_value(self, tp):
        return self.states[tp]


class FetchedRecords:
    """aiokafka's PartitionRecords as a FetchResult reads it: offsets, then the next one."""

    def __init__(self, first, count):
        self._offsets = iter(range(first, first + count))
        self.next_fetch_offset = first

    def __iter__(self):
        return self

    def __next__(self):
        offset = next(self._offsets)
        self.next_fetch_offset = offset + 1
        return offset


class Subscriptions:
    reassignment_in_progress = False

    def is_assigned(self, tp):
        return True


def fetcher_holding(tp, count):
    """aiokafka's own Fetcher with ``count`` fetched records of ``tp`` not yet handed out."""
    state = PartitionState(position=0)
    fetcher = object.__new__(Fetcher)
    fetcher._subscriptions = Subscriptions()
    fetcher._wait_consume_future = None
    fetcher._records = {
        tp: FetchResult(
            tp,
            assignment=Assignment({tp: state}),
            partition_records=FetchedRecords(0, count),
            backoff=0,
        )
    }
    return fetcher, state


def test_aiokafka_hands_out_every_partition_to_a_fetch_whose_partition_set_is_empty():
    """The trap: Faust's live set of active partitions is empty during a rebalance."""
    fetcher, state = fetcher_holding(CHANGELOG, 157)
    drained = asyncio.run(fetcher.fetched_records(set(), timeout=0))
    assert len(drained[CHANGELOG]) == 157 and state.position == 157


def test_a_fetch_during_a_rebalance_hands_out_nothing_and_keeps_the_records():
    """With the live set emptied by the rebalance, the records stay where they are."""
    fetcher, state = fetcher_holding(CHANGELOG, 157)
    only = DeliverableNow(set(), FlowOf(active=False))
    assert asyncio.run(fetcher.fetched_records(only, timeout=0)) == {}
    assert state.position == 0 and CHANGELOG in fetcher._records


def test_a_partition_made_active_while_the_fetch_waits_is_handed_out():
    """The set is read when the records are handed out, as Faust's own set is."""
    active: set[TP] = set()
    only = DeliverableNow(active, FlowOf(active=True))
    active.add(CHANGELOG)
    fetcher, state = fetcher_holding(CHANGELOG, 3)
    assert asyncio.run(fetcher.fetched_records(only, timeout=0)) == {CHANGELOG: [0, 1, 2]}
    assert state.position == 3


def test_an_active_partition_is_not_handed_out_while_the_flow_is_stopped():
    fetcher, state = fetcher_holding(CHANGELOG, 3)
    only = DeliverableNow({CHANGELOG}, FlowOf(active=False))
    assert asyncio.run(fetcher.fetched_records(only, timeout=0)) == {}
    assert state.position == 0


def test_an_active_partition_is_not_handed_out_for_an_emptied_set_while_the_flow_runs():
    """Emptied by a pause while the flow runs: still never aiokafka's "every partition"."""
    fetcher, state = fetcher_holding(CHANGELOG, 3)
    only = DeliverableNow(set(), FlowOf(active=True))
    assert asyncio.run(fetcher.fetched_records(only, timeout=0)) == {}
    assert state.position == 0


def test_the_position_the_net_reads_is_aiokafkas_own():
    """``_handed_out_to`` reads aiokafka's real subscription state: a position sought to
    157 is seen, an unassigned partition has none."""
    tp = TopicPartition(CHANGELOG.topic, CHANGELOG.partition)

    async def positions():
        subscription = SubscriptionState()
        subscription.assign_from_user({tp})
        c = consumer()
        c._thread = types.SimpleNamespace(
            _consumer=types.SimpleNamespace(_subscription=subscription)
        )
        before = c._handed_out_to(CHANGELOG)
        subscription.subscription.assignment.state_value(tp).seek(157)
        return before, c._handed_out_to(CHANGELOG), c._handed_out_to(TP(CHANGELOG.topic, 6))

    assert asyncio.run(positions()) == (None, 157, None)
