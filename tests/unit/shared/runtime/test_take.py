"""Batches whose window starts at their first record (shared/runtime/take.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pytest import approx

from shared.runtime.take import Batcher, take_batches


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeFaustStream:
    """What take_batches uses of a Faust stream, on a fake clock.

    ``feed`` runs a record through the processors as Faust's passive drainer
    would (``current_event`` set meanwhile). Waiting for an event that is not
    set moves the clock on by the timeout, as if it had passed.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.enable_acks = True
        self._processors: list[Any] = []
        self.current_event: Any = None
        self.channel = EmptyChannel()
        self.passive = False
        self.should_stop = False
        self.acked: list[Any] = []
        self.waited: list[float] = []

    def add_processor(self, processor: Any) -> None:
        self._processors.append(processor)

    def _enable_passive(self, _channel: Any) -> None:
        self.passive = True

    async def feed(self, event: Any) -> None:
        self.current_event = event
        for processor in self._processors:
            await processor(event)
        self.current_event = None

    async def wait(self, event: asyncio.Event) -> None:
        await event.wait()

    async def wait_for_stopped(self, event: asyncio.Event, timeout: float) -> None:
        await asyncio.sleep(0)  # let a feeder run
        if not event.is_set():
            self.waited.append(timeout)
            self.clock.now += timeout

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


class EmptyChannel:
    def __aiter__(self) -> EmptyChannel:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_batch_is_due_within_the_window_of_its_first_record():
    clock = Clock()
    batcher = Batcher(max_=10, within_s=0.04)
    assert batcher.wait_s(clock()) is None
    batcher.add("a", 100.0)
    batcher.add("b", 100.03)
    assert abs(batcher.wait_s(100.03) - 0.01) < 1e-9
    assert batcher.wait_s(100.05) == 0.0


def test_a_full_batch_is_due_at_once():
    batcher = Batcher(max_=2, within_s=5.0)
    batcher.add("a", 0.0)
    batcher.add("b", 0.0)
    assert batcher.full and batcher.wait_s(0.0) == 0.0


def test_take_starts_an_empty_batch():
    batcher = Batcher(max_=3, within_s=1.0)
    batcher.add("a", 1.0)
    assert batcher.take() == ["a"]
    assert batcher.events == [] and batcher.wait_s(2.0) is None


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=20))
def test_no_record_waits_longer_than_the_window_once_the_batch_is_asked_for(gaps):
    """Whatever the arrivals, the batch is due by first arrival + window."""
    batcher = Batcher(max_=1000, within_s=0.04)
    at = 0.0
    for gap in gaps:
        at += gap
        batcher.add(object(), at)
    first = at - sum(gaps[1:])
    wait = batcher.wait_s(at)
    assert wait is not None and at + wait <= max(at, first + 0.04) + 1e-9


def test_a_record_that_arrives_while_the_agent_works_is_not_held_for_a_new_window():
    """It arrived 0.01 s into the agent's 0.06 s of work: its window is over, it goes at once."""

    async def scenario() -> tuple[list[list[str]], list[float]]:
        clock = Clock()
        stream = FakeFaustStream(clock)
        batches = take_batches(stream, 10, 0.04, clock=clock)
        got = []
        await stream_first(stream, "a")
        got.append(await anext(batches))
        clock.now += 0.01
        await stream.feed("b")  # while the agent works on ["a"]
        clock.now += 0.05
        got.append(await anext(batches))
        await batches.aclose()
        return got, stream.waited

    got, waited = run(scenario())
    assert got == [["a"], ["b"]]
    assert waited == [approx(0.04)]  # only the first batch waited its window; "b"'s was over


async def stream_first(stream: FakeFaustStream, value: str) -> None:
    """Deliver ``value`` once the generator is set up (its processor added)."""

    async def deliver() -> None:
        while not stream._processors:
            await asyncio.sleep(0)
        await stream.feed(value)

    asyncio.ensure_future(deliver())


def test_a_batch_waits_only_the_rest_of_its_window():
    async def scenario() -> list[float]:
        clock = Clock()
        stream = FakeFaustStream(clock)
        batches = take_batches(stream, 10, 0.04, clock=clock)
        await stream_first(stream, "a")
        await anext(batches)
        await stream.feed("b")
        clock.now += 0.01  # the agent took 0.01 s after "b" arrived
        await anext(batches)
        await batches.aclose()
        return stream.waited

    waited = run(scenario())
    assert waited == [approx(0.04), approx(0.03)]


def test_batches_never_exceed_max_and_the_stream_waits_for_room():
    async def scenario() -> tuple[list[list[str]], bool]:
        clock = Clock()
        stream = FakeFaustStream(clock)
        batches = take_batches(stream, 2, 10.0, clock=clock)
        feeder = None

        async def feed_all() -> None:
            while not stream._processors:
                await asyncio.sleep(0)
            for value in "abcde":
                await stream.feed(value)

        feeder = asyncio.ensure_future(feed_all())
        got = [await anext(batches), await anext(batches)]
        blocked = not feeder.done()  # "e" waits for room
        got.append(await anext(batches))
        await feeder
        await batches.aclose()
        return got, blocked

    got, blocked = run(scenario())
    assert got == [["a", "b"], ["c", "d"], ["e"]]
    assert blocked


def test_events_are_acked_when_the_agent_comes_back_and_acks_restored_at_close():
    async def scenario() -> tuple[list[Any], list[Any], bool, int]:
        clock = Clock()
        stream = FakeFaustStream(clock)
        batches = take_batches(stream, 10, 0.04, clock=clock)
        await stream_first(stream, "a")
        await anext(batches)
        acked_while_working = list(stream.acked)
        await stream.feed("b")
        await anext(batches)
        acked_after = list(stream.acked)
        await batches.aclose()
        return acked_while_working, acked_after, stream.enable_acks, len(stream._processors)

    while_working, after, enable_acks, processors = run(scenario())
    assert while_working == [] and after == ["a"]
    assert enable_acks is True and processors == 0
