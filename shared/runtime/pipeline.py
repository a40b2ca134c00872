"""Batches in flight: the next batch is processed while the previous one's acks are pending.

A batch ends in three steps, each waiting on the broker: its outputs acked,
then its state written (RocksDB and the changelog, acked), then its input
offsets acked for commit. Done one batch at a time, those round trips were
the larger part of every hop's latency and left the worker idle between
batches (docs/benchmarks.md, "Pipelined batches"). Here a batch's end runs
in the background while the agent takes and processes the next ones, with
every order of the one-at-a-time loop kept:

* Outputs leave in batch order: a batch's records are handed to the
  producer only once the previous batch's are acked, so a batch whose sends
  fail is sent again before any later batch's records (per-key order on
  every output topic is the input order, as before).
* State is written in batch order, each batch's only after its own outputs
  are acked. RocksDB keeps a write at once, before its changelog record or
  the batch's offsets are committed: if state went first, a kill -9 between
  the state write and the sends would leave a redelivered input looking
  "already done" and its outputs lost. Outputs first means a crash can only
  repeat outputs, which every consumer of ours treats idempotently. Until a
  batch's state is written, the next batches read it from ``PendingWrites``,
  so they see exactly the state the one-at-a-time loop would have shown them.
* Input offsets are acked in batch order, each batch's only once its state
  is in the changelog: nothing is committed before its effects are durable.

A failed send or changelog write is retried with the same records (the
batch's decisions stand; every consumer treats a repeat idempotently), never
skipped. A cancelled agent (stop, crash) leaves every batch in flight
uncommitted, to be redelivered.

At depth 0 the changelog rides with the next batch (``changelog_wait_s``):
once a batch's outputs are acked its state goes to RocksDB at once, and its
changelog records wait to be handed to the producer together with the next
batch's outputs, so that both leave in one produce request instead of two
round trips per batch (docs/benchmarks.md, "The changelog with the next
batch"). Every order above still holds: state after its own outputs, the
offsets only once the changelog is acked, the changelog of one batch acked
before the next one's is handed over. When no batch follows within the wait,
the changelog leaves on its own. A kill -9 before it leaves is the case the
one-at-a-time loop already had between the store write and the changelog
ack: the inputs were not committed, and a redelivered input that finds its
state writes it again (``StateCache.rewrite``).

The carry is held (``changelog_hold_s``): the batches that come while it is
younger than the hold join it, their outputs leaving alone, their state
stored at once, their changelog values taking the place of the carried ones
of the same keys. A key written again within the hold (a conversion's owner
at its acceptance and at each answer, a report row) then reaches the
changelog once, and the carry leaves with the first batch after the hold.
The carried batches are, for the changelog and the commit, one larger
batch: their inputs are committed together, in order, once it is acked.
A carry with ``changelog_hold_bytes`` of keys and values or more leaves with
the next batch whatever its age: an agent that rewrites large values (an
identifier's history) would otherwise hold the hold's worth of them in memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: A table's writes of one batch: (partition, key, value or None to delete).
Writes = list[tuple[int, bytes, bytes | None]]

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


class PendingWrites:
    """A table's writes of the batches in flight, newest value per key.

    Staged when a batch is processed, settled once the batch's writes are in
    the store: a key a later batch wrote again stays until that batch settles.
    """

    def __init__(self) -> None:
        self._by_partition: dict[int, dict[bytes, tuple[int, bytes | None]]] = {}
        #: Keys by (partition, group): a prefix read of a group needs no scan.
        self._groups: dict[tuple[int, bytes], set[bytes]] = {}

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._by_partition.values())

    def lookup(self, partition: int, key: bytes) -> tuple[bool, bytes | None]:
        """(whether a batch in flight wrote ``key``, the value it wrote: None deletes)."""
        keys = self._by_partition.get(partition)
        entry = keys.get(key) if keys is not None else None
        return (False, None) if entry is None else (True, entry[1])

    def with_prefix(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes | None]]:
        """The pending (key, value) pairs of ``partition`` whose key starts with ``prefix``."""
        keys = self._by_partition.get(partition, {})
        if is_group(prefix):
            for key in self._groups.get((partition, prefix), ()):
                yield key, keys[key][1]
            return
        for key, (_batch, value) in keys.items():
            if key.startswith(prefix):
                yield key, value

    def clear(self) -> None:
        self._by_partition.clear()
        self._groups.clear()

    def stage(self, batch: int, writes: Writes) -> None:
        for partition, key, value in writes:
            self._by_partition.setdefault(partition, {})[key] = (batch, value)
            for group in groups_of(key):
                self._groups.setdefault((partition, group), set()).add(key)

    def settle(self, batch: int, writes: Writes) -> None:
        for partition, key, _value in writes:
            keys = self._by_partition.get(partition)
            if keys is not None and keys.get(key, (None,))[0] == batch:
                del keys[key]
                if not keys:
                    del self._by_partition[partition]
                for group in groups_of(key):
                    members = self._groups.get((partition, group))
                    if members is not None:
                        members.discard(key)
                        if not members:
                            del self._groups[(partition, group)]


#: How many ``|``-ended prefixes of a key are indexed: an owner's items
#: (``"{owner}|..."``) and one kind of them (``"{owner}|{kind}|..."``).
GROUP_LEVELS = 2


def groups_of(key: bytes) -> list[bytes]:
    """A composite key's groups: its starts up to and including each of its first
    ``GROUP_LEVELS`` ``|`` (a user's parts, then one kind of them); none for a
    plain key."""
    groups: list[bytes] = []
    at = key.find(b"|")
    while at >= 0 and len(groups) < GROUP_LEVELS:
        groups.append(key[: at + 1])
        at = key.find(b"|", at + 1)
    return groups


def is_group(prefix: bytes) -> bool:
    """Whether ``prefix`` is a group (it ends with its ``|``, and has at most
    ``GROUP_LEVELS``): then the keys starting with it are exactly the keys
    indexed under it, found without a scan."""
    return prefix.endswith(b"|") and prefix.count(b"|") <= GROUP_LEVELS


async def write_table(table: Any, writes: Writes) -> list[Awaitable[Any]]:
    """Write a batch's values to ``table``; what to await until they are in its changelog."""
    if not writes:
        return []
    write_batch = getattr(table, "write_batch", None)
    if write_batch is not None:
        return [await write_batch(writes)]
    for _partition, key, raw in writes:  # a table without batches (a test double)
        if raw is None:
            del table[key]
        else:
            table[key] = raw
    return []


def hold(events: Sequence[Any]) -> None:
    """Take a reference on each input, so that ``take_events`` acking it does not commit it."""
    for event in events:
        event.message.incref()


def release(events: Sequence[Any]) -> None:
    """Drop our reference: the inputs' offsets become committable (in batch order)."""
    for event in events:
        event.ack()


def hold_offsets(events: Sequence[Any]) -> None:
    """Keep the offsets of an unfinished batch out of every commit.

    A message already marked acked is skipped by the consumer's ack
    bookkeeping, so its offset never becomes committable and the batch is
    redelivered after the worker restarts: at-least-once, never lost.
    """
    for event in events:
        event.message.acked = True


Ship = Callable[[list[Any]], Awaitable[list[Awaitable[Any]]]]
#: Hands over (outputs, an earlier batch's changelog records) in one call; their
#: record batches (``shared.kafka.batch_producer.SentBatch``).
ShipWithChangelog = Callable[[list[Any], list[Any]], Awaitable[list[Any]]]


async def retry(
    log: Any,
    what: str,
    count: int,
    attempt_once: Callable[[], Awaitable[None]],
    on_failure: Callable[[], None] | None = None,
) -> None:
    """Run ``attempt_once`` until it succeeds, pausing longer after each failure.

    Each failure is logged as ``what`` with the error's type only (a message may
    quote input). Cancellation (stop, rebalance) is not retried.
    """
    attempt = 0
    while True:
        try:
            await attempt_once()
            return
        except Exception as exc:
            attempt += 1
            if on_failure is not None:
                on_failure()
            pause = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1))
            log.error(
                what, error=type(exc).__name__, attempt=attempt, events=count, retry_in_s=pause
            )
            await asyncio.sleep(pause)


@dataclass(eq=False)
class InFlight:
    """One processed batch on its way to the broker."""

    number: int
    events: Sequence[Any]
    delivered: asyncio.Task[None]
    finished: asyncio.Task[None]


@dataclass(eq=False)
class Carry:
    """Batches whose outputs are acked and whose state is in the store; their changelog
    records wait to leave with a later batch's outputs.

    ``writes`` keeps the newest value of each key per table (partition and key): a
    key written by several of the carried batches leaves once.
    """

    events: list[Any]
    writes: list[dict[tuple[int, bytes], bytes | None]]
    #: The loop's time when its first batch's state was stored.
    born: float
    timer: asyncio.TimerHandle | None = None
    #: Bytes of the carried keys and values (what holding it keeps in memory).
    size: int = 0

    @classmethod
    def of(cls, events: Sequence[Any], writes: list[Writes], born: float) -> Carry:
        carry = cls([], [{} for _ in writes], born)
        carry.take_in(events, writes)
        return carry

    def take_in(self, events: Sequence[Any], writes: list[Writes]) -> None:
        """Add a later batch: its inputs after the carried ones, its values over theirs."""
        self.events.extend(events)
        for merged, table_writes in zip(self.writes, writes, strict=True):
            for partition, key, value in table_writes:
                replaced = merged.get((partition, key))
                if replaced is not None:
                    self.size -= len(replaced)
                elif (partition, key) not in merged:
                    self.size += len(key)
                merged[(partition, key)] = value
                self.size += len(value) if value is not None else 0

    def table_writes(self) -> list[Writes]:
        """Each table's carried writes, one per key."""
        return [[(p, key, value) for (p, key), value in merged.items()] for merged in self.writes]


def _stop_timer(carry: Carry | None) -> None:
    """Cancel the carry's send-alone timer: it leaves some other way."""
    if carry is not None and carry.timer is not None:
        carry.timer.cancel()


def can_carry(table: Any) -> bool:
    """Whether ``table`` can write its store and hand over its changelog records apart
    (``shared.runtime.app.AckedTable``)."""
    return all(
        callable(getattr(table, name, None))
        for name in ("write_store", "changelog_records", "persist_sent")
    )


class Pipeline:
    """The batches of one agent between their processing and their commit.

    ``depth`` bounds how many batches may be in flight when the next one is
    taken; 0 finishes each batch before the next (the one-at-a-time loop),
    its changelog records leaving with the next batch's outputs when
    ``ship_with_changelog`` is given, ``changelog_wait_s`` is above 0 and every
    table can (``can_carry``).
    """

    def __init__(
        self,
        tables: Sequence[Any],
        ship: Ship,
        log: Any,
        depth: int,
        *,
        ship_with_changelog: ShipWithChangelog | None = None,
        changelog_wait_s: float = 0.0,
        changelog_hold_s: float = 0.0,
        changelog_hold_bytes: int = 1 << 20,
    ) -> None:
        self.tables = tuple(tables)
        self.pending = tuple(PendingWrites() for _ in self.tables)
        self._ship = ship
        self._log = log
        self._depth = depth
        self._in_flight: deque[InFlight] = deque()
        self._number = 0
        self._ship_with = ship_with_changelog
        self._wait_s = changelog_wait_s
        self._hold_s = changelog_hold_s
        self._hold_bytes = changelog_hold_bytes
        self.carries = (
            depth == 0
            and changelog_wait_s > 0
            and ship_with_changelog is not None
            and bool(self.tables)  # without state there is no changelog to carry
            and all(can_carry(table) for table in self.tables)
        )
        self._carry: Carry | None = None
        self._alone: tuple[Carry, asyncio.Task[None]] | None = None  # a carry sent on its own
        self._last_words: asyncio.Future[None] | None = None  # see abandon()

    async def submit(self, events: Sequence[Any], records: list[Any], writes: list[Writes]) -> None:
        """Hand over a processed batch: its outputs (records) and its tables' writes."""
        if self.carries:
            await self._submit_carrying(events, records, writes)
            return
        previous = self._in_flight[-1] if self._in_flight else None
        if previous is not None:
            await asyncio.shield(previous.delivered)  # outputs leave in batch order
        self._number += 1
        number = self._number
        for pending, table_writes in zip(self.pending, writes, strict=True):
            pending.stage(number, table_writes)
        hold(events)
        try:
            # Handed over at once, so the records leave with the producer's next request.
            first: list[Awaitable[Any]] | Exception = await self._ship(records) if records else []
        except Exception as exc:  # no metadata for a topic (the broker is away), say
            first = exc
        delivered = asyncio.ensure_future(self._deliver(records, first, len(events)))
        finished = asyncio.ensure_future(self._finish(number, events, delivered, writes, previous))
        self._in_flight.append(InFlight(number, events, delivered, finished))
        while self._in_flight and (
            self._in_flight[0].finished.done() or len(self._in_flight) > self._depth
        ):
            await asyncio.shield(self._in_flight[0].finished)
            self._in_flight.popleft().finished.result()

    async def drain(self) -> None:
        """Wait until every batch in flight is committed-ready."""
        self._send_carry_alone()
        await self._sent_alone()
        while self._in_flight:
            await asyncio.shield(self._in_flight[0].finished)
            self._in_flight.popleft()

    def abandon(self) -> None:
        """Stop every batch in flight without committing it (the agent is going away)."""
        for batch in self._in_flight:
            batch.delivered.cancel()
            batch.finished.cancel()
            hold_offsets(batch.events)
        self._in_flight.clear()
        for pending in self.pending:
            pending.clear()
        carry, self._carry = self._carry, None
        alone, self._alone = self._alone, None
        if alone is not None:
            alone[1].cancel()
        for held in (carry, alone[0] if alone else None):
            if held is not None:
                _stop_timer(held)
                hold_offsets(held.events)
        if carry is not None:
            # Its state is in the store already: let the changelog have it too, as the
            # one-at-a-time loop's queued records would have left (its inputs stay held).
            self._last_words = asyncio.ensure_future(self._hand_over_once(carry))

    async def _hand_over_once(self, carry: Carry) -> None:
        """One attempt at a stopping agent's carried changelog, awaited by no one."""
        assert self._ship_with is not None
        try:
            for part in self._changelogs_of(carry):
                batches = await self._ship_with([], part)
                await asyncio.gather(*(batch.future for batch in batches))
        except Exception as exc:
            self._log.error(
                "changelog_not_sent", error=type(exc).__name__, events=len(carry.events)
            )

    async def _submit_carrying(
        self, events: Sequence[Any], records: list[Any], writes: list[Writes]
    ) -> None:
        """Depth 0 with the changelog carried: this batch's outputs leave with the carried
        changelog, then this batch's state is stored and its changelog carried.

        A carry younger than the hold and smaller than its byte bound takes the batch
        in instead: the outputs leave alone, and the carry leaves with the first batch
        after the hold or the bound.
        """
        await self._sent_alone()  # its changelog before any later one
        carry = self._carry  # it leaves now; abandon() still finds it until settled
        loop = asyncio.get_running_loop()
        holding = (
            carry is not None
            and loop.time() - carry.born < self._hold_s
            and carry.size < self._hold_bytes
        )
        _stop_timer(carry)
        hold(events)
        sent = await self._delivered_with_carry(records, None if holding else carry, len(events))
        if carry is not None and not holding:
            await self._settle(carry, sent)
            self._carry = None
        if any(writes):
            await retry(self._log, "state_write_failed", len(events), self._stored(writes))
        if self._carry is not None:
            # Inputs are committed in batch order: a batch without state waits in the carry.
            self._carry.take_in(events, writes)
        elif any(writes):
            self._carry = Carry.of(events, writes, loop.time())
        else:
            release(events)
            return
        carry = self._carry
        due = carry.born + self._hold_s + self._wait_s - loop.time()
        carry.timer = loop.call_later(max(due, 0.0), self._send_carry_alone)

    def _take_carry(self) -> Carry | None:
        carry, self._carry = self._carry, None
        _stop_timer(carry)
        return carry

    def _send_carry_alone(self) -> None:
        """No batch came within the wait (or the agent drains): the changelog leaves alone."""
        carry = self._take_carry()
        if carry is not None:
            self._alone = (carry, asyncio.ensure_future(self._flush(carry)))

    async def _sent_alone(self) -> None:
        if self._alone is not None:
            await asyncio.shield(self._alone[1])
            self._alone = None

    async def _flush(self, carry: Carry) -> None:
        sent = await self._delivered_with_carry([], carry, len(carry.events))
        await self._settle(carry, sent)

    async def _delivered_with_carry(
        self, records: list[Any], carry: Carry | None, count: int
    ) -> list[Any]:
        """Outputs and the carry's changelog acked; their record batches.

        The first table's changelog records leave with the outputs; each further
        table's once the one before is acked, as the one-at-a-time loop wrote them:
        agents order their tables so that a crash between two of them leaves the
        earlier newer, never the later (docs/scaling.md), and one produce request
        is not atomic across partitions.
        """
        parts = self._changelogs_of(carry)
        sent = await self._handed_over(records, parts[0] if parts else [], count)
        for part in parts[1:]:
            sent += await self._handed_over([], part, count)
        return sent

    def _changelogs_of(self, carry: Carry | None) -> list[list[Any]]:
        """The carry's changelog records, one list per table that has writes, in table order."""
        if carry is None:
            return []
        return [
            table.changelog_records(table_writes)
            for table, table_writes in zip(self.tables, carry.table_writes(), strict=True)
            if table_writes
        ]

    async def _handed_over(self, records: list[Any], changelog: list[Any], count: int) -> list[Any]:
        """Hand ``records`` and ``changelog`` over together until the broker has acked them
        all (sent again, both, after a failure); their record batches."""
        assert self._ship_with is not None
        if not records and not changelog:
            return []
        ship_with = self._ship_with
        sent: list[Any] = []

        async def attempt() -> None:
            nonlocal sent
            batches = await ship_with(records, changelog)
            await asyncio.gather(*(batch.future for batch in batches))
            sent = batches

        await retry(self._log, "batch_failed", count, attempt)
        return sent

    async def _settle(self, carry: Carry, sent: list[Any]) -> None:
        """The carry's changelog is acked: its offsets persisted, its inputs committable."""

        async def persist() -> None:
            for table, table_writes in zip(self.tables, carry.writes, strict=True):
                if table_writes:
                    await table.persist_sent(sent)

        await retry(self._log, "state_write_failed", len(carry.events), persist)
        release(carry.events)

    def _stored(self, writes: list[Writes]) -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            for table, table_writes in zip(self.tables, writes, strict=True):
                if table_writes:
                    table.write_store(table_writes)

        return attempt

    async def _deliver(
        self, records: list[Any], first: list[Awaitable[Any]] | Exception, count: int
    ) -> None:
        """Wait until the broker has acked the batch's records; send them again if it failed.

        ``first`` is what handing them over the first time gave: their acks, or the error.
        """
        given: list[Awaitable[Any]] | Exception | None = first

        async def attempt() -> None:
            nonlocal given
            sent, given = (given if given is not None else await self._ship(records)), None
            if isinstance(sent, Exception):
                raise sent
            if sent:
                await asyncio.gather(*sent)

        await retry(self._log, "batch_failed", count, attempt)

    async def _finish(
        self,
        number: int,
        events: Sequence[Any],
        delivered: asyncio.Future[None],
        writes: list[Writes],
        previous: InFlight | None,
    ) -> None:
        await delivered
        if previous is not None:
            await previous.finished  # state is written in batch order
        for table, pending, table_writes in zip(self.tables, self.pending, writes, strict=True):
            if table_writes:
                await retry(
                    self._log, "state_write_failed", len(events), _written(table, table_writes)
                )
            pending.settle(number, table_writes)
        release(events)


def _written(table: Any, writes: Writes) -> Callable[[], Awaitable[None]]:
    """One attempt at writing ``writes``: to the store, then acked in the changelog."""

    async def attempt() -> None:
        acks = await write_table(table, writes)
        if acks:
            await asyncio.gather(*acks)

    return attempt
