"""A Faust consumer that never skips a record of a topic that is not compacted.

Faust's fetch loop (``Consumer._drain_messages``) can deliver records of a
batch fetched *before* a seek after the seek has moved the read position back
(seen after a kill -9 and restart: the records just past the committed offset
were dropped while the flow was suspended, then later records of the same
batch arrived). Faust takes the jump for a compaction gap: it marks the
skipped offsets as done (``_add_gap``) and its ``_new_offset`` lets a gap that
starts one past the committed offset through, so the skipped records were
committed without ever reaching an agent (measured: 10 records per partition
lost, for example offsets 148-157 of ads.engagements partition 4).

On topics that are never compacted, offsets have no holes (convmesh writes no
transactions), so this consumer delivers their records strictly in sequence
from the position it last sought: a record past the next expected offset is
not delivered, and the partition is sought back to the expected offset to read
the missing ones; a record before it (a repeat) is not delivered either.
Compacted topics keep Faust's own handling. The loop below is Faust 0.15's
``_drain_messages`` with that rule added, and with the callback run in place
when it does not suspend (``shared.runtime.eager``) instead of under a
per-record ``wait_first``; keep it in step when upgrading.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from mode import Service

from shared.kafka.fetch_pacing import pace_fetches, wake_on_path
from shared.kafka.fetch_sessions import use_fetch_sessions
from shared.runtime import changelog_reads, eager
from shared.runtime.changelog_reads import ChangelogRead, lost_reads, recovery_of
from shared.runtime.stream import DeliveryNotices

#: A seek back whose expected record has not come after this long is repeated.
RESEEK_AFTER_S = 5.0
#: A commit held this long by a record never acked (while later ones were) is a lost delivery.
HOLE_GRACE_S = 30.0


class DeliverableNow:
    """The partitions whose fetched records a fetch may hand to Faust: its active
    partitions at the moment of handing out, and none while its flow is stopped.

    Faust's consumer thread passes its live set of active partitions to aiokafka's
    ``Fetcher.fetched_records``, and aiokafka hands out the records of *every*
    partition when that set is empty. A rebalance empties the set (it pauses the whole
    assignment) while a fetch started before it still waits in the consumer thread:
    when it wakes, it hands out what aiokafka fetched meanwhile, for partitions Faust
    does not deliver, and aiokafka's position moves past those records. Faust's fetch
    loop drops them. A stream partition is sought back to its committed offset after
    the rebalance, but a changelog partition being restored is not: its recovery
    waited for records already gone (the chaos suite's stalled dedupe recovery,
    docs/reliability.md). Here a record is handed out only if Faust would deliver it.
    """

    __slots__ = ("_active", "_consumer")

    def __init__(self, active: set[TP], consumer: Any) -> None:
        self._active = active
        self._consumer = consumer

    def __bool__(self) -> bool:
        return True  # never aiokafka's "every partition"

    def __contains__(self, tp: object) -> bool:
        return bool(self._consumer.flow_active) and tp in self._active


class FetchTunedThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait of its consumer's settings.

    Faust fixes ``fetch_min_bytes`` at aiokafka's 1 and ``fetch_max_wait_ms`` at
    1500: the broker answers a fetch as soon as one record is there, so at a
    moderate rate every record arriving alone costs a whole fetch (request,
    response, Faust's per-fetch work) in every service it passes. With a
    minimum size, the broker holds the fetch until that much has arrived or
    the wait is over: records arrive in groups, for a bounded wait. Its fetches
    go in fetch sessions (``shared.kafka.fetch_sessions``) unless the app's
    consumer turns them off.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        owner = cast(InOrderConsumer, self.consumer)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_min_bytes = owner.fetch_min_bytes
        consumer._fetch_max_wait_ms = owner.fetch_max_wait_ms
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP] | None,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        only: Any = active_partitions  # None: a client-only app reads everything
        if active_partitions is not None:
            only = DeliverableNow(active_partitions, self.consumer)
        return await super()._fetch_records(
            consumer, only, timeout=timeout, max_records=max_records
        )

    async def on_start(self) -> None:
        await super().on_start()
        owner = cast(InOrderConsumer, self.consumer)
        fetcher = self._ensure_consumer()._fetcher
        if owner.fetch_sessions:
            use_fetch_sessions(fetcher)
        if owner.wake_topics:
            wake_on_path(fetcher, owner.wake_topics)  # around the sessions' client
        pace_fetches(fetcher, owner.fetch_gap_s)


class InOrderConsumer(AIOKafkaConsumer):
    """Set ``gapless_topics`` (real names) and the fetch wait on a subclass per app."""

    gapless_topics: frozenset[str] = frozenset()
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 1500
    fetch_sessions: bool = False  # the app's settings turn them on (create_app)
    #: Topics of the conversions' path whose records make the next fetch wake on any
    #: record, and the shortest time between two fetches to one broker (``fetch_pacing``).
    wake_topics: frozenset[str] = frozenset()
    fetch_gap_s: float = 0.0

    def _new_consumer_thread(self) -> FetchTunedThread:
        return FetchTunedThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Tells the agents' takes when a fetch's records are all handed over
        #: (``shared.runtime.stream``).
        self.notices = DeliveryNotices()
        self._next_offset: dict[TP, int] = {}
        #: partition -> (offset sought back to, when): the seek not yet seen to land
        self._seeking: dict[TP, tuple[int, float]] = {}
        #: partition -> (committed offset held by an unacked record, since when)
        self._holes: dict[TP, tuple[int, float]] = {}
        #: partition -> (committed offset, next offset, since when): read past the
        #: commit with nothing of it queued, in an agent's hands or acked
        self._unaccounted: dict[TP, tuple[int, int, float]] = {}

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._next_offset = {
            tp: offset for tp, offset in self._read_offset.items() if offset is not None
        }
        self._seeking.clear()

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._next_offset[partition] = offset
        self._seeking.pop(partition, None)

    def admit_in_sequence(self, tp: TP, offset: int) -> bool:
        """True, and the record is admitted, when it is the one expected next
        (or its topic may have gaps): the per-record common case, without a
        coroutine. False leaves the decision to ``admit``."""
        if tp.topic not in self.gapless_topics:
            return True
        expected = self._next_offset.get(tp)
        if expected is None or offset == expected:
            self._next_offset[tp] = offset + 1
            if self._seeking:
                self._seeking.pop(tp, None)
            return True
        return False

    async def admit(self, tp: TP, offset: int) -> bool:
        """Whether to deliver this record now (see the module docstring)."""
        return self.admit_in_sequence(tp, offset) or await self._admit_out_of_sequence(tp, offset)

    async def _admit_out_of_sequence(self, tp: TP, offset: int) -> bool:
        """``admit`` for a record of a gapless topic that is not the one expected next."""
        expected = self._next_offset[tp]
        if offset < expected:
            return False  # a repeat of a record already delivered
        pending = self._seeking.get(tp)
        now = time.monotonic()
        if pending is not None and pending[0] == expected:
            if now - pending[1] < RESEEK_AFTER_S:
                return False  # a stale record fetched before the seek took effect
            # Still no record at the expected offset: the seek may have been lost
            # (a rebalance, a reconnect in between). Seek again, never stall.
            await self._repeat_seek(tp, expected, now)
            return False
        earliest = (await self.earliest_offsets(tp)).get(tp)
        if earliest is not None and earliest > expected:
            # Retention deleted records nobody had read: nothing to go back to.
            self.log.warning(
                "records deleted before they were read: %r %r-%r", tp, expected, earliest - 1
            )
            self._next_offset[tp] = expected = earliest
            if offset == expected:
                self._next_offset[tp] = offset + 1
                return True
        self.log.warning(
            "records skipped by the fetch loop, reading them again: %r %r-%r",
            tp,
            expected,
            offset - 1,
        )
        await self._seek_back(tp, expected, now)
        return False

    async def _seek_back(self, tp: TP, expected: int, now: float) -> None:
        """Read ``tp`` again from ``expected``; later records are stale until it lands."""
        self._seeking[tp] = (expected, now)
        await self._seek(tp, expected)

    async def _repeat_seek(self, tp: TP, expected: int, now: float) -> None:
        """Seek back again: the last seek to ``expected`` has not landed in RESEEK_AFTER_S."""
        self.log.warning("seek did not take effect, seeking again: %r %r", tp, expected)
        await self._seek_back(tp, expected, now)

    async def reseek_lost(self, now: float) -> list[tuple[TP, int]]:
        """Seek again every partition whose seek back has not landed for RESEEK_AFTER_S.

        ``admit`` repeats such a seek when a stale record of the partition
        arrives. When every record past the expected offset was fetched before
        the seek, none arrives, so nothing there would repeat it: the records
        from the expected offset on would stay unread for good, and with no
        later record acked there is no hole for ``heal_stalled`` to find
        either. A timer calls this, so a lost seek is repeated in any case.
        """
        lost = [
            (tp, expected)
            for tp, (expected, since) in list(self._seeking.items())
            if now - since >= RESEEK_AFTER_S
        ]
        for tp, expected in lost:
            try:
                await self._repeat_seek(tp, expected, now)
            except Exception as exc:  # noqa: BLE001 - e.g. revoked meanwhile: the rebalance re-seeks
                self._seeking.pop(tp, None)
                self.log.warning("seek failed for %r: %r", tp, exc)
        return lost

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's next offset to commit, never past a record of a gapless topic not acked.

        Faust lets a commit through when the lowest acked offset is one past the
        committed one (``min(acked) - committed > 1`` is its test): the record *at*
        the committed offset is then skipped if it was never acked. Offsets of
        a non-compacted topic have no holes, so here that record must be acked
        first. (Compacted topics keep Faust's rule, which its gap bookkeeping needs.)
        """
        acked = self._acked.get(tp)
        committed = self._committed_offset.get(tp)
        if tp.topic in self.gapless_topics and acked and committed is not None:
            if min(acked) > committed:
                return None
        new: int | None = super()._new_offset(tp)
        return new

    def stalled(self, now: float) -> list[tuple[TP, int, int]]:
        """(partition, committed offset, lowest acked offset) of every partition whose
        commit has been held for HOLE_GRACE_S by a record never acked.

        Records are acked in order, so a later record acked while the one at the
        committed offset never is means that record's delivery was lost (to a
        rebalance or an outage that cut it short). Nothing would ever ack it.
        """
        found = []
        current: dict[TP, tuple[int, float]] = {}
        for tp, acked in list(self._acked.items()):
            committed = self._committed_offset.get(tp)
            if not acked or committed is None or min(acked) <= committed:
                continue
            since = self._holes.get(tp)
            first_seen = since[1] if since is not None and since[0] == committed else now
            current[tp] = (committed, first_seen)
            if now - first_seen >= HOLE_GRACE_S:
                found.append((tp, committed, min(acked)))
        self._holes = current
        return found

    async def heal_stalled(self, now: float) -> list[tuple[TP, int, int]]:
        """Read every stalled partition again from its committed offset.

        Redelivered records are idempotent for every agent (docs/design.md), and
        the one never acked gets its delivery this time; the commit moves on.
        """
        healed = self.stalled(now)
        for tp, committed, lowest in healed:
            self.log.error(
                "partition_stalled: %r committed %r, acked from %r: reading again",
                tp,
                committed,
                lowest,
            )
            self._holes.pop(tp, None)
            await self._read_again(tp, committed, "partition_stalled")
        return healed

    async def _read_again(self, tp: TP, committed: int, why: str) -> None:
        """Seek ``tp`` back to its committed offset; redelivered records are idempotent."""
        try:
            await self.seek(tp, committed)
        except Exception as exc:  # noqa: BLE001 - e.g. revoked meanwhile: the rebalance re-seeks
            self.log.warning("%s: seek failed for %r: %r", why, tp, exc)

    def lost(self, now: float, queued: set[TP]) -> list[tuple[TP, int, int]]:
        """(partition, committed offset, next offset) of every partition whose records
        from the committed offset on have been delivered and, for HOLE_GRACE_S,
        are nowhere: not in a stream queue (``queued``), not in an agent's hands,
        not acked.

        Such records were dropped between the consumer and the agents (a queue
        emptied under them, see ``shared.runtime.flow``). When they were the
        partition's last, no later record is acked either, so ``stalled`` sees
        no hole: without this the partition would keep its lag for good.
        """
        in_hand: dict[TP, list[int]] = {}
        for message in list(self._unacked_messages):
            in_hand.setdefault(message.tp, []).append(message.offset)
        found = []
        current: dict[TP, tuple[int, int, float]] = {}
        for tp, next_offset in list(self._next_offset.items()):
            committed = self._committed_offset.get(tp)
            if committed is None or next_offset <= committed or tp in self._seeking:
                continue
            # What an earlier assignment left (below the commit) accounts for nothing.
            pending = (*self._acked.get(tp, ()), *in_hand.get(tp, ()))
            if tp in queued or any(offset >= committed for offset in pending):
                continue
            seen = self._unaccounted.get(tp)
            first_seen = (
                seen[2] if seen is not None and seen[:2] == (committed, next_offset) else now
            )
            current[tp] = (committed, next_offset, first_seen)
            if now - first_seen >= HOLE_GRACE_S:
                found.append((tp, committed, next_offset))
        self._unaccounted = current
        return found

    async def heal_lost(self, now: float, queued: set[TP]) -> list[tuple[TP, int, int]]:
        """Read every partition with lost records (``lost``) again from its committed offset."""
        healed = self.lost(now, queued)
        for tp, committed, next_offset in healed:
            self.log.error(
                "records_lost: %r read up to %r, committed %r, none pending: reading again",
                tp,
                next_offset - 1,
                committed,
            )
            self._unaccounted.pop(tp, None)
            await self._read_again(tp, committed, "records_lost")
        return healed

    def changelog_reads(self, now: float) -> dict[TP, ChangelogRead]:
        """Where the table recovery and this consumer are in each changelog partition
        the recovery still reads (``shared.runtime.changelog_reads``)."""
        recovery = recovery_of(self.app)
        if recovery is None or not recovery.in_recovery:
            return {}
        started = recovery._recovery_started_at
        started = now if started is None else started
        received_at = recovery._active_events_received_at
        reads = {}
        for tp in list(recovery.active_tps):
            last, received = recovery.active_highwaters.get(tp), recovery.active_offsets.get(tp)
            if last is None or received is None or received >= last:
                continue
            reads[tp] = ChangelogRead(
                received=received,
                last_offset=last,
                position=self._handed_out_to(tp),
                silent_s=now - max(started, received_at.get(tp, started)),
            )
        return reads

    def _handed_out_to(self, tp: TP) -> int | None:
        """aiokafka's position of ``tp``: the next offset it will hand out (read from
        the consumer thread's state, as asking it would wait for a position)."""
        kafka = getattr(getattr(self, "_thread", None), "_consumer", None)
        assignment = getattr(getattr(kafka, "_subscription", None), "subscription", None)
        assignment = getattr(assignment, "assignment", None)
        if assignment is None:
            return None
        state = assignment.state_value(tp)  # None when not assigned
        return state.position if state is not None and state.has_valid_position else None

    async def reread_lost_changelog(self, now: float) -> dict[TP, int]:
        """Read again, from just after the last record the recovery received, every
        changelog partition whose records were handed out and never reached it."""
        queue: Any = cast(Any, self.app.tables).changelog_queue
        generation = self.app.consumer_generation_id
        lost = lost_reads(self.changelog_reads(now), queue_empty=queue.empty())
        for tp, offset in lost.items():
            if self.app.consumer_generation_id != generation:
                break  # a rebalance: the recovery starts over and seeks them itself
            self.log.error(
                "changelog_records_lost: %r handed out, never received by the recovery"
                " after offset %r: reading again",
                tp,
                offset - 1,
            )
            await self._read_again(tp, offset, "changelog_records_lost")
        return lost

    @Service.task
    async def _reread_lost_changelog_records(self) -> None:  # pragma: no cover - a timer
        # A task of the consumer's own: the app's timers start only once recovery is done.
        while not self.should_stop:
            await self.sleep(changelog_reads.CHECK_INTERVAL_S)
            try:
                await self.reread_lost_changelog(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - a net must never stop the consumer
                self.log.warning("changelog_records_lost check failed: %r", exc)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        notices = self.notices
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(Any, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        notices.delivering = True
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        if not self.admit_in_sequence(
                            tp, offset
                        ) and not await self._admit_out_of_sequence(tp, offset):
                            continue
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            gapless = tp.topic in self.gapless_topics
                            if gap > 1 and r_offset and not gapless:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            finished, rest = eager.start(callback(message))
                            if not finished:
                                await self.wait_first(rest, self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    notices.delivered()
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            notices.delivered()
            unset_flag(CONSUMER_FETCHING)
