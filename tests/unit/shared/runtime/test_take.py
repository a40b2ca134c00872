"""take_batches (shared/runtime/take.py): batches that keep filling while one is processed.

The stream here is a double of the parts of a Faust stream that take_batches
uses: processors called one event at a time by a passive drainer, acks, and
the service waits that end when the stream stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.runtime.take import take_batches

LONG_S = 30.0  # a linger no test may wait out


@dataclass
class Waited:
    stopped: bool


class PassiveStream:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self._processors: list[Callable[[Any], Any]] = []
        self.enable_acks = True
        self.current_event: int | None = None
        self.buffered = 0  # events a processor has returned from
        self.acked: list[int] = []
        self.stopped = asyncio.Event()
        self.channel = self
        self._drainer: asyncio.Task[None] | None = None

    def __aiter__(self) -> AsyncIterator[int]:
        return self

    async def __anext__(self) -> int:
        raise StopAsyncIteration

    @property
    def should_stop(self) -> bool:
        return self.stopped.is_set()

    def add_processor(self, processor: Callable[[Any], Any]) -> None:
        self._processors.append(processor)

    def _enable_passive(self, _channel: Any) -> None:
        self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while True:
            value = await self.queue.get()
            self.current_event = value
            for processor in self._processors:
                await processor(value)
            self.buffered += 1

    async def wait(self, event: asyncio.Event, timeout: float | None = None) -> Waited:
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.stopped.wait())]
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        # As mode's Service.wait: a timeout is reported as "stopped" too.
        return Waited(stopped=self.stopped.is_set() or not done)

    async def wait_for_stopped(self, event: asyncio.Event, timeout: float | None = None) -> bool:
        return (await self.wait(event, timeout)).stopped

    async def ack(self, event: int) -> None:
        self.acked.append(event)

    def put(self, *values: int) -> None:
        for value in values:
            self.queue.put_nowait(value)

    def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), LONG_S)


@pytest.fixture
async def stream() -> AsyncIterator[PassiveStream]:
    s = PassiveStream()
    yield s
    s.close()


async def test_a_record_reaching_an_idle_hop_goes_at_once(stream: PassiveStream) -> None:
    batches = take_batches(stream, 500, LONG_S)
    stream.put(7)
    assert await asyncio.wait_for(anext(batches), LONG_S / 2) == [7]
    await batches.aclose()


async def test_a_full_batch_does_not_wait_for_the_window(stream: PassiveStream) -> None:
    batches = take_batches(stream, 3, LONG_S)
    stream.put(1)
    assert await anext(batches) == [1]
    stream.put(2, 3, 4)
    assert await asyncio.wait_for(anext(batches), LONG_S / 2) == [2, 3, 4]
    await batches.aclose()


async def test_the_next_batch_waits_the_window_from_the_previous_hand_out(
    stream: PassiveStream,
) -> None:
    loop = asyncio.get_running_loop()
    batches = take_batches(stream, 500, 0.05)
    stream.put(1)
    assert await anext(batches) == [1]
    handed_out = loop.time()
    stream.put(2)
    assert await asyncio.wait_for(anext(batches), LONG_S) == [2]
    assert loop.time() - handed_out >= 0.045  # the window (timer resolution aside)
    await batches.aclose()


async def test_batches_go_on_after_a_window_ran_out(stream: PassiveStream) -> None:
    """mode reports a wait's timeout as "stopped"; that must not end the batches."""
    batches = take_batches(stream, 500, 0.01)
    for n in range(3):
        stream.put(n)
        assert await asyncio.wait_for(anext(batches), LONG_S) == [n]
    await batches.aclose()


async def test_events_arriving_during_processing_are_buffered_for_the_next_batch(
    stream: PassiveStream,
) -> None:
    """Faust's take_events blocks its buffer while a batch runs; this one keeps filling."""
    batches = take_batches(stream, 500, 0.01)
    stream.put(1)
    assert await anext(batches) == [1]
    stream.put(2, 3, 4)
    await until(lambda: stream.buffered == 4)  # buffered while batch [1] is "processed"
    assert await anext(batches) == [2, 3, 4]
    await batches.aclose()


async def test_a_full_buffer_holds_the_stream_back(stream: PassiveStream) -> None:
    batches = take_batches(stream, 2, LONG_S)
    stream.put(1, 2)
    assert await anext(batches) == [1, 2]
    stream.put(3, 4, 5)
    await until(lambda: stream.buffered == 4)
    await asyncio.sleep(0.01)  # give the drainer a chance it must not take
    assert stream.buffered == 4  # 5 waits for room: at most max_ events buffered
    assert await anext(batches) == [3, 4]
    await until(lambda: stream.buffered == 5)
    await batches.aclose()


async def test_a_batch_is_acked_only_after_it_was_processed(stream: PassiveStream) -> None:
    batches = take_batches(stream, 2, LONG_S)
    stream.put(1, 2, 3, 4)
    assert await anext(batches) == [1, 2]
    assert stream.acked == []  # being processed
    assert await anext(batches) == [3, 4]
    assert stream.acked == [1, 2]
    await batches.aclose()
    assert stream.acked == [1, 2, 3, 4]


async def test_closing_restores_the_stream(stream: PassiveStream) -> None:
    batches = take_batches(stream, 2, LONG_S)
    stream.put(1, 2)
    await anext(batches)
    assert stream.enable_acks is False
    await batches.aclose()
    assert stream.enable_acks is True
    assert stream._processors == []


async def test_a_stop_ends_the_batches(stream: PassiveStream) -> None:
    batches = take_batches(stream, 2, LONG_S)
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0)
    stream.stopped.set()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, LONG_S)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_"):
        take_batches(PassiveStream(), 0, 0.1)


@settings(max_examples=30, deadline=None)
@given(
    max_=st.integers(1, 5),
    arrivals=st.lists(st.integers(0, 6), min_size=1, max_size=6),
)
def test_every_event_is_handed_out_once_in_order_and_no_batch_is_too_big(
    max_: int, arrivals: list[int]
) -> None:
    """Whatever arrives between batches, the batches are the events in order, each at most max_."""

    async def scenario() -> list[list[int]]:
        stream = PassiveStream()
        batches = take_batches(stream, max_, 0.0)
        seen: list[list[int]] = []
        sent = 0
        try:
            for count in arrivals:
                stream.put(*range(sent, sent + count))
                sent += count
                if sent > sum(map(len, seen)):
                    seen.append(await asyncio.wait_for(anext(batches), LONG_S))
            while sum(map(len, seen)) < sent:
                seen.append(await asyncio.wait_for(anext(batches), LONG_S))
            await batches.aclose()
        finally:
            stream.close()
        assert stream.acked == list(range(sent))
        return seen

    seen = asyncio.run(scenario())
    assert [event for batch in seen for event in batch] == sorted(e for b in seen for e in b)
    assert all(1 <= len(batch) <= max_ for batch in seen)
