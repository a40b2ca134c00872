"""Batches in flight (shared.runtime.pipeline): order, durability and retries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.runtime import pipeline
from shared.runtime.batching import StateCache
from shared.runtime.pipeline import PendingWrites, Pipeline, Writes
from tests.support.harness import FakeEvent, FakeMessage


class Log:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.errors.append((event, fields))


class Broker:
    """A producer whose acks the test gives, one record batch (ship call) at a time."""

    def __init__(self) -> None:
        self.shipped: list[list[Any]] = []
        self.acks: list[asyncio.Future[None]] = []
        self.auto = False
        self.fail_next = 0

    async def ship(self, records: list[Any]) -> list[asyncio.Future[None]]:
        self.shipped.append(list(records))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_next:
            self.fail_next -= 1
            ack.set_exception(RuntimeError("broker said no"))
        elif self.auto:
            ack.set_result(None)
        self.acks.append(ack)
        return [ack]

    def ack(self, index: int) -> None:
        self.acks[index].set_result(None)


class Table:
    """A table whose changelog acks the test gives (or not, when ``auto``)."""

    def __init__(self, auto: bool = True) -> None:
        self.data: dict[bytes, bytes] = {}
        self.auto = auto
        self.written: list[list[tuple[int, bytes, bytes | None]]] = []
        self.acks: list[asyncio.Future[None]] = []

    async def write_batch(self, writes: list[tuple[int, bytes, bytes | None]]) -> Any:
        self.written.append(list(writes))
        for _partition, key, value in writes:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.auto:
            ack.set_result(None)
        self.acks.append(ack)
        return ack

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(key)

    def read_prefix(self, partition: int, prefix: bytes) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v in self.data.items() if k.startswith(prefix)]


def batch(n: int, start: int = 0) -> list[FakeEvent]:
    return [FakeEvent(FakeMessage("in", b"k", b"v", 0, start + i)) for i in range(n)]


def add_to_counters(
    flight: Pipeline,
    table: Any,
    events: list[FakeEvent],
    items: list[tuple[bytes, int]],
    seen: list[int],
) -> list[tuple[int, bytes, bytes | None]]:
    """A batch that adds to counters, as the pipeline lets it read them; its writes."""
    cache = StateCache(table, flight.pending[0])
    for key, add in items:
        value = (cache.get(key, events[0]) or 0) + add
        seen.append(value)
        cache.put(key, value, events[0])
    return cache.take_writes()


async def ack_some(broker: Broker, rng: random.Random, *, in_order: bool) -> None:
    """Yield once, then ack one open request half of the time (the oldest, or any)."""
    await asyncio.sleep(0)
    open_acks = [a for a in broker.acks if not a.done()]
    if open_acks and rng.random() < 0.5:
        (open_acks[0] if in_order else rng.choice(open_acks)).set_result(None)


def assert_one_at_a_time(
    batches: list[list[tuple[bytes, int]]], seen: list[int], data: dict[bytes, bytes]
) -> None:
    """Every read and the final store equal those of applying the batches one by one."""
    expected: dict[bytes, int] = {}
    expected_seen = []
    for items in batches:
        for key, add in items:
            expected[key] = expected.get(key, 0) + add
            expected_seen.append(expected[key])
    assert seen == expected_seen
    assert data == {key: str(value).encode() for key, value in expected.items()}


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_pending_writes_keep_the_newest_value_until_its_batch_settles() -> None:
    pending = PendingWrites()
    pending.stage(1, [(0, b"a", b"1"), (0, b"b", b"2")])
    pending.stage(2, [(0, b"a", None)])
    pending.settle(1, [(0, b"a", b"1"), (0, b"b", b"2")])
    assert pending.lookup(0, b"a") == (True, None)  # batch 2's delete is still in flight
    assert pending.lookup(0, b"b") == (False, None)
    pending.settle(2, [(0, b"a", None)])
    assert len(pending) == 0


def test_pending_writes_are_per_partition() -> None:
    pending = PendingWrites()
    pending.stage(1, [(3, b"u|1", b"x"), (4, b"u|2", b"y")])
    assert list(pending.with_prefix(3, b"u|")) == [(b"u|1", b"x")]
    assert pending.lookup(4, b"u|1") == (False, None)


def test_a_prefix_read_of_a_group_finds_its_keys_until_their_batch_settles() -> None:
    """A group (up to a key's first ``|``) is indexed; other prefixes are scanned, same answer."""
    pending = PendingWrites()
    pending.stage(1, [(0, b"u|1", b"x"), (0, b"u|2|z", None), (0, b"uv|1", b"y")])
    pending.stage(2, [(0, b'["a|b"]|c', b"w")])
    assert sorted(pending.with_prefix(0, b"u|")) == [(b"u|1", b"x"), (b"u|2|z", None)]
    assert list(pending.with_prefix(0, b'["a|b"]|')) == [(b'["a|b"]|c', b"w")]
    assert list(pending.with_prefix(0, b"u")) != []  # not a group: a scan
    pending.settle(1, [(0, b"u|1", b"x"), (0, b"u|2|z", None), (0, b"uv|1", b"y")])
    assert list(pending.with_prefix(0, b"u|")) == []


async def test_the_next_batch_is_processed_before_the_previous_one_is_acked() -> None:
    broker, table = Broker(), Table()
    flight = Pipeline([table], broker.ship, Log(), depth=4)
    first, second = batch(1), batch(1, 1)
    await flight.submit(first, ["r1"], [[(0, b"k", b"1")]])
    cache = StateCache(table, flight.pending[0])
    assert cache.get(b"k", first[0]) == 1  # read from the batch in flight
    assert table.data == {}  # not in the store before its outputs are acked
    assert first[0].message.acked is False
    broker.ack(0)
    await settle()
    assert table.data == {b"k": b"1"}
    first[0].ack()  # take_events' own reference
    assert first[0].message.acked is True
    await flight.submit(second, ["r2"], [[]])
    broker.ack(1)
    await flight.drain()
    assert broker.shipped == [["r1"], ["r2"]]


async def test_outputs_leave_only_after_the_previous_batchs_are_acked() -> None:
    broker = Broker()
    flight = Pipeline([], broker.ship, Log(), depth=4)
    await flight.submit(batch(1), ["r1"], [])
    submitted = asyncio.ensure_future(flight.submit(batch(1, 1), ["r2"], []))
    await settle()
    assert broker.shipped == [["r1"]] and not submitted.done()
    broker.ack(0)
    await submitted
    assert broker.shipped == [["r1"], ["r2"]]
    broker.ack(1)
    await flight.drain()


async def test_offsets_are_released_in_batch_order_only_after_the_state_is_in_the_changelog() -> (
    None
):
    broker, table = Broker(), Table(auto=False)
    broker.auto = True
    flight = Pipeline([table], broker.ship, Log(), depth=4)
    first, second = batch(1), batch(1, 1)
    await flight.submit(first, ["r1"], [[(0, b"k", b"1")]])
    await flight.submit(second, ["r2"], [[(0, b"k", b"2")]])
    for events in (first, second):
        for event in events:
            event.ack()  # take_events acks right after the agent takes the next batch
    await settle()
    assert table.written == [[(0, b"k", b"1")]]  # the second waits for the first
    assert not first[0].message.acked and not second[0].message.acked
    table.acks[0].set_result(None)
    await settle()
    assert first[0].message.acked and not second[0].message.acked
    table.acks[1].set_result(None)
    await flight.drain()
    assert second[0].message.acked and table.data == {b"k": b"2"}
    assert len(flight.pending[0]) == 0


async def test_failed_sends_are_sent_again_with_the_same_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "RETRY_FIRST_S", 0.0)
    broker, log = Broker(), Log()
    broker.auto, broker.fail_next = True, 2
    flight = Pipeline([], broker.ship, log, depth=4)
    await flight.submit(batch(2), ["a", "b"], [])
    await flight.drain()
    assert broker.shipped == [["a", "b"]] * 3
    assert [event for event, _ in log.errors] == ["batch_failed", "batch_failed"]


async def test_depth_zero_finishes_each_batch_before_the_next() -> None:
    broker, table = Broker(), Table()
    broker.auto = True
    flight = Pipeline([table], broker.ship, Log(), depth=0)
    await flight.submit(batch(1), ["r1"], [[(0, b"k", b"1")]])
    assert table.data == {b"k": b"1"} and len(flight.pending[0]) == 0


async def test_an_abandoned_batch_is_never_committed() -> None:
    broker = Broker()
    flight = Pipeline([Table()], broker.ship, Log(), depth=4)
    events = batch(2)
    await flight.submit(events, ["r1"], [[(0, b"k", b"1")]])
    flight.abandon()
    broker.ack(0)
    await settle()
    for event in events:
        event.ack()
    assert all(event.message.acked and event.message.refcount > 0 for event in events)
    assert len(flight.pending[0]) == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.integers(0, 3)), max_size=4),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 3),
    st.integers(0, 2**32),
)
def test_batches_in_flight_read_and_leave_the_state_of_one_at_a_time(
    batches: list[list[tuple[bytes, int]]], depth: int, seed: int
) -> None:
    """Each batch adds to counters; whatever the acks' timing, every read and the final
    store equal those of applying the batches one after the other."""

    rng = random.Random(seed)

    async def scenario() -> tuple[list[int], dict[bytes, bytes]]:
        broker, table = Broker(), Table()
        flight = Pipeline([table], broker.ship, Log(), depth=depth)
        seen: list[int] = []

        async def acker() -> None:
            while True:
                await ack_some(broker, rng, in_order=True)

        task = asyncio.ensure_future(acker())
        for number, items in enumerate(batches):
            events = batch(max(1, len(items)), number * 10)
            await flight.submit(
                events, [number], [add_to_counters(flight, table, events, items, seen)]
            )
        await flight.drain()
        task.cancel()
        return seen, table.data

    seen, data = asyncio.run(scenario())
    assert_one_at_a_time(batches, seen, data)


async def test_a_batch_the_producer_refuses_to_take_is_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handing records over can itself fail (no metadata while the broker is away):
    the agent goes on, and the batch is sent again after a pause."""
    monkeypatch.setattr(pipeline, "RETRY_FIRST_S", 0.0)
    broker, log = Broker(), Log()
    broker.auto = True
    refusals = [RuntimeError("no metadata")]

    async def ship(records: list[Any]) -> list[asyncio.Future[None]]:
        if refusals:
            raise refusals.pop()
        return await broker.ship(records)

    flight = Pipeline([], ship, log, depth=4)
    events = batch(1)
    await flight.submit(events, ["a"], [])
    await flight.drain()
    events[0].ack()
    assert broker.shipped == [["a"]] and events[0].message.acked
    assert [event for event, _ in log.errors] == ["batch_failed"]


class SentBatch:
    """What ``send_many`` gives for one record batch: the records and their ack."""

    def __init__(self, records: list[Any], future: asyncio.Future[None]) -> None:
        self.records = records
        self.topic = "changelog"
        self.future = future


class CarryBroker(Broker):
    """A producer taking outputs and changelog records in one call (one produce request)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[Any], list[Any]]] = []

    async def ship_with(self, records: list[Any], changelog: list[Any]) -> list[SentBatch]:
        self.calls.append((list(changelog), list(records)))
        [ack] = await self.ship([*changelog, *records])
        return [SentBatch([*changelog, *records], ack)]  # type: ignore[list-item]


class CarryTable(Table):
    """A table whose store writes and changelog records are apart, as AckedTable's."""

    def __init__(self, topic: str = "changelog") -> None:
        super().__init__()
        self.topic = topic
        self.persisted: list[list[Any]] = []  # the changelog records acked, per settle

    def write_store(self, writes: list[tuple[int, bytes, bytes | None]]) -> None:
        for _partition, key, value in writes:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def changelog_records(self, writes: list[tuple[int, bytes, bytes | None]]) -> list[Any]:
        return [(self.topic, partition, key, value) for partition, key, value in writes]

    async def persist_sent(self, sent: list[SentBatch]) -> None:
        assert all(batch.future.done() for batch in sent), "persisted before its ack"
        records = [r for batch in sent for r in batch.records]
        self.persisted.append([r for r in records if isinstance(r, tuple) and r[0] == self.topic])


def carrying(
    table: CarryTable,
    broker: CarryBroker,
    wait_s: float = 60.0,
    *more: CarryTable,
    hold_s: float = 0.0,
    hold_bytes: int = 1 << 20,
) -> Pipeline:
    flight = Pipeline(
        [table, *more],
        broker.ship,
        Log(),
        depth=0,
        ship_with_changelog=broker.ship_with,
        changelog_wait_s=wait_s,
        changelog_hold_s=hold_s,
        changelog_hold_bytes=hold_bytes,
    )
    assert flight.carries
    return flight


def taken(n: int, start: int = 0) -> list[FakeEvent]:
    """A batch whose events take_events no longer holds: the pipeline's hold is the last."""
    events = batch(n, start)
    for event in events:
        event.message.refcount = 0
    return events


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait for ``condition`` (a timer's doing), failing after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.002)


def released(events: list[FakeEvent]) -> bool:
    return all(event.message.acked for event in events)


async def test_a_batchs_changelog_leaves_in_one_request_with_the_next_batchs_outputs() -> None:
    broker, table = CarryBroker(), CarryTable()
    broker.auto = True
    flight = carrying(table, broker)
    first, second = taken(1), taken(1, 1)
    await flight.submit(first, ["r1"], [[(0, b"k", b"1")]])
    assert table.data == {b"k": b"1"}  # in the store once its outputs are acked
    assert not released(first)  # but not committable before its changelog is acked
    await flight.submit(second, ["r2"], [[(0, b"k", b"2")]])
    assert broker.calls == [([], ["r1"]), ([("changelog", 0, b"k", b"1")], ["r2"])]
    assert released(first) and not released(second)
    await flight.drain()
    assert released(second)
    assert broker.calls[-1] == ([("changelog", 0, b"k", b"2")], [])


def holding_flight(wait_s: float = 60.0, **hold: Any) -> tuple[CarryBroker, CarryTable, Pipeline]:
    """A broker that acks at once, a table and a pipeline holding its carry (``hold_s``,
    ``hold_bytes``)."""
    broker, table = CarryBroker(), CarryTable()
    broker.auto = True
    return broker, table, carrying(table, broker, wait_s, **hold)


async def submit_each(flight: Pipeline, *writes: Writes) -> list[list[FakeEvent]]:
    """One single-input batch per ``writes``, with outputs r1, r2, ...; their inputs."""
    inputs = []
    for number, batch_writes in enumerate(writes):
        events = taken(1, number)
        await flight.submit(events, [f"r{number + 1}"], [batch_writes])
        inputs.append(events)
    return inputs


async def test_a_held_carry_takes_in_the_next_batches_and_logs_each_key_once() -> None:
    """Within the hold the outputs leave alone and a key written again is logged once,
    with its newest value; every input stays uncommitted until that record is acked."""
    broker, table, flight = holding_flight(hold_s=60.0)
    first, second = await submit_each(flight, [(0, b"k", b"1"), (0, b"j", b"1")], [(0, b"k", b"2")])
    assert broker.calls == [([], ["r1"]), ([], ["r2"])]
    assert table.data == {b"k": b"2", b"j": b"1"}  # the store has each batch's state at once
    assert not released(first) and not released(second)
    await flight.drain()
    assert broker.calls[-1] == ([("changelog", 0, b"k", b"2"), ("changelog", 0, b"j", b"1")], [])
    assert released(first) and released(second)


async def test_a_carry_past_its_byte_bound_leaves_with_the_next_batch_within_the_hold() -> None:
    """The bound counts each key once and its newest value: what holding keeps in memory."""
    broker, _table, flight = holding_flight(hold_s=60.0, hold_bytes=8)
    await submit_each(
        flight,
        [(0, b"k", b"123")],  # 4 bytes
        [(0, b"k", b"12345")],  # 6: still held
        [(0, b"j", b"1")],  # 8: the bound
    )
    assert broker.calls == [([], ["r1"]), ([], ["r2"]), ([], ["r3"])]
    await flight.submit(taken(1, 3), ["r4"], [[]])
    logged = [("changelog", 0, b"k", b"12345"), ("changelog", 0, b"j", b"1")]
    assert broker.calls[-1] == (logged, ["r4"])


async def test_the_first_batch_after_the_hold_carries_the_held_changelog() -> None:
    """Two batches held, then the carry ages past its hold: the next batch takes it."""
    broker, _table, flight = holding_flight(hold_s=60.0)
    first, second = await submit_each(flight, [(0, b"k", b"1")], [(0, b"k", b"2"), (0, b"j", b"1")])
    assert flight._carry is not None
    flight._carry.born -= 61.0  # the carry is older than its hold
    third = taken(1, 2)
    await flight.submit(third, ["r3"], [[(0, b"k", b"3")]])
    logged = [("changelog", 0, b"k", b"2"), ("changelog", 0, b"j", b"1")]
    assert broker.calls == [([], ["r1"]), ([], ["r2"]), (logged, ["r3"])]
    assert released(first) and released(second) and not released(third)


async def test_a_held_carry_leaves_alone_after_the_hold_and_the_wait() -> None:
    """A hold long enough that the second batch joins even on a loaded machine; no batch
    follows, so the timer sends the carry alone."""
    _broker, table, flight = holding_flight(wait_s=0.005, hold_s=0.3)
    first, second = await submit_each(flight, [(0, b"k", b"1")], [(0, b"k", b"2")])
    await until(lambda: released(first) and released(second), timeout_s=10.0)
    assert table.persisted == [[("changelog", 0, b"k", b"2")]]


async def test_a_batch_without_state_is_committed_after_the_held_batches_before_it() -> None:
    """Offsets are committed in batch order: a stateless batch waits in the carry."""
    _broker, _table, flight = holding_flight(hold_s=60.0)
    first, stateless = await submit_each(flight, [(0, b"k", b"1")], [])
    assert not released(stateless)
    await flight.drain()
    assert released(first) and released(stateless)


async def test_an_abandoned_held_carry_commits_none_of_its_batches() -> None:
    broker, table, flight = holding_flight(hold_s=60.0)
    first, second = await submit_each(flight, [(0, b"k", b"1")], [(0, b"j", b"1")])
    flight.abandon()
    await settle()
    held = [*first, *second]
    assert all(event.message.acked and event.message.refcount > 0 for event in held)
    assert broker.calls[-1] == ([("changelog", 0, b"k", b"1"), ("changelog", 0, b"j", b"1")], [])
    assert table.persisted == []


async def test_a_carried_changelog_leaves_on_its_own_when_no_batch_follows() -> None:
    broker, table = CarryBroker(), CarryTable()
    broker.auto = True
    flight = carrying(table, broker, wait_s=0.01)
    events = taken(2)
    await flight.submit(events, ["r1"], [[(0, b"k", b"1")]])
    await until(lambda: released(events))
    assert table.persisted == [[("changelog", 0, b"k", b"1")]]


async def test_the_inputs_of_a_carried_changelog_wait_for_its_ack() -> None:
    broker, table = CarryBroker(), CarryTable()
    flight = carrying(table, broker)
    first, second = taken(1), taken(1, 1)
    submitted = asyncio.ensure_future(flight.submit(first, ["r1"], [[(0, b"k", b"1")]]))
    await settle()
    assert table.data == {} and not submitted.done()  # state waits for the outputs' ack
    broker.ack(0)
    await submitted
    submitted = asyncio.ensure_future(flight.submit(second, [], [[]]))
    await settle()
    assert broker.shipped[-1] == [("changelog", 0, b"k", b"1")]
    assert not released(first)
    broker.ack(1)
    await submitted
    assert released(first) and released(second)  # a batch without state: done at its ack


async def test_an_abandoned_carry_is_never_committed_but_its_changelog_leaves() -> None:
    """Its state is in the store: the changelog gets it too, the inputs stay uncommitted."""
    broker, table = CarryBroker(), CarryTable()
    broker.auto = True
    flight = carrying(table, broker)
    events = taken(2)
    await flight.submit(events, ["r1"], [[(0, b"k", b"1")]])
    flight.abandon()
    await settle()
    assert all(event.message.acked and event.message.refcount > 0 for event in events)
    assert broker.calls == [([], ["r1"]), ([("changelog", 0, b"k", b"1")], [])]
    assert table.persisted == []


async def test_a_batch_waits_for_the_ack_of_a_changelog_sent_alone_before_it_leaves() -> None:
    """The timer sent a carry alone; the next batch hands over nothing until its ack."""
    broker, table = CarryBroker(), CarryTable()
    broker.auto = True
    flight = carrying(table, broker, wait_s=0.001)
    first = taken(1)
    await flight.submit(first, ["r1"], [[(0, b"k", b"1")]])
    broker.auto = False
    await until(lambda: len(broker.shipped) == 2)
    assert broker.shipped[1] == [("changelog", 0, b"k", b"1")]
    submitted = asyncio.ensure_future(flight.submit(taken(1, 1), ["r2"], [[(0, b"k", b"2")]]))
    await settle()
    assert len(broker.shipped) == 2 and not released(first)
    broker.ack(1)
    await settle()
    assert released(first) and broker.shipped[2] == ["r2"]
    broker.ack(2)
    await submitted
    assert table.data == {b"k": b"2"}


async def test_a_failed_request_sends_the_outputs_and_the_carried_changelog_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "RETRY_FIRST_S", 0.0)
    broker, table = CarryBroker(), CarryTable()
    broker.auto = True
    flight = carrying(table, broker)
    await flight.submit(taken(1), ["r1"], [[(0, b"k", b"1")]])
    broker.fail_next = 1
    await flight.submit(taken(1, 1), ["r2"], [[]])
    assert broker.calls[1:] == [([("changelog", 0, b"k", b"1")], ["r2"])] * 2
    assert table.persisted == [[("changelog", 0, b"k", b"1")]]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.integers(0, 3)), max_size=4),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 2**32),
    st.booleans(),
    st.sampled_from([0.0, 60.0]),
    st.sampled_from([4, 1 << 20]),
)
def test_a_carried_changelog_keeps_the_state_and_every_order_of_one_at_a_time(
    batches: list[list[tuple[bytes, int]]],
    seed: int,
    short_wait: bool,
    hold_s: float,
    hold_bytes: int,
) -> None:
    """Counters added batch by batch, acks at random, the changelog carried, held (up to
    a byte bound) or sent alone: reads and the store equal one-at-a-time; the changelog
    holds each key's values in batch order; inputs become committable in batch order,
    each once the changelog has its state."""

    rng = random.Random(seed)
    after_batch = counters_after_each(batches)

    async def scenario() -> tuple[list[int], dict[bytes, bytes], list[Any], list[int]]:
        broker, table = CarryBroker(), CarryTable()
        wait_s = 0.001 if short_wait else 60.0
        flight = carrying(table, broker, wait_s, hold_s=hold_s, hold_bytes=hold_bytes)
        seen: list[int] = []
        committed: list[int] = []
        all_events: list[list[FakeEvent]] = []
        failures: list[str] = []

        async def acker() -> None:
            while True:
                await ack_some(broker, rng, in_order=False)
                for number, events in enumerate(all_events):
                    if number not in committed and released(events):
                        if committed != list(range(number)):
                            failures.append(f"batch {number} committable out of order")
                        logged = {r[2]: int(r[3]) for part in table.persisted for r in part}
                        if any(
                            logged.get(key, -1) < value
                            for key, value in after_batch[number].items()
                        ):
                            failures.append(f"batch {number} committable before its changelog")
                        committed.append(number)

        task = asyncio.ensure_future(acker())
        for number, items in enumerate(batches):
            events = taken(max(1, len(items)), number * 10)
            all_events.append(events)
            await flight.submit(
                events, [number], [add_to_counters(flight, table, events, items, seen)]
            )
        await asyncio.wait_for(flight.drain(), timeout=10)
        await asyncio.sleep(0.01)
        task.cancel()
        assert failures == []
        return seen, table.data, table.persisted, committed

    seen, data, persisted, committed = asyncio.run(scenario())
    assert_one_at_a_time(batches, seen, data)
    changelog = {key: value for part in persisted for _t, _p, key, value in part}
    assert changelog == data  # the last changelog value of every key is the stored one
    for key in changelog:  # each key's values in batch order (counters only grow)
        logged = [int(value) for part in persisted for _t, _p, k, value in part if k == key]
        assert logged == sorted(logged)
    assert committed == list(range(len(batches)))


def counters_after_each(batches: list[list[tuple[bytes, int]]]) -> list[dict[bytes, int]]:
    """The counters each batch leaves, one batch after another."""
    counters: dict[bytes, int] = {}
    after = []
    for items in batches:
        for key, add in items:
            counters[key] = counters.get(key, 0) + add
        after.append(dict(counters))
    return after


async def test_a_second_tables_changelog_leaves_only_once_the_firsts_is_acked() -> None:
    """One produce request is not atomic across partitions: tables stay in their order."""
    broker, watchers, keys = CarryBroker(), CarryTable("watchers"), CarryTable("keys")
    broker.auto = True
    flight = carrying(watchers, broker, 60.0, keys)
    first = taken(1)
    await flight.submit(first, ["r1"], [[(0, b"w", b"1")], [(0, b"k", b"1")]])
    broker.auto = False
    submitted = asyncio.ensure_future(flight.submit(taken(1, 1), ["r2"], [[], []]))
    await settle()
    assert broker.shipped[1:] == [[("watchers", 0, b"w", b"1"), "r2"]]
    broker.ack(1)
    await settle()
    assert broker.shipped[2:] == [[("keys", 0, b"k", b"1")]] and not released(first)
    broker.ack(2)
    await submitted
    assert released(first)
    assert watchers.persisted == [[("watchers", 0, b"w", b"1")]]
    assert keys.persisted == [[("keys", 0, b"k", b"1")]]
