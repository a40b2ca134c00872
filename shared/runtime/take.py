"""Batches of a Faust stream whose window starts when their first record arrives.

Faust's ``take_events(max_, within)`` waits up to ``within`` from the moment
the agent asks for the next batch, and holds new records back while the agent
works on the previous one. A record that arrives while the agent is busy
therefore waits for the whole previous batch (its processing, and in the
one-at-a-time loop its two broker round trips) *and then* a full window. At a
moderate rate nearly every record does, in every hop (docs/benchmarks.md,
"The batch window from the first record").

Here records keep going into the next batch while the agent works, and a
batch is handed out once it is full or ``within`` after its first record
arrived: no record waits for its batch to fill longer than ``within``. Under
load (the agent busier than the window) each batch is whatever arrived
meanwhile, up to ``max_``; at low rates it is what the window gathers, as
before. Acks are Faust's: every event of a batch is acked (for the stream)
once the agent asks for the next batch or stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

#: How often an idle generator checks that its stream is still running.
IDLE_CHECK_S = 1.0


class Batcher:
    """The batch being gathered: its events and when its first one arrived."""

    def __init__(self, max_: int, within_s: float) -> None:
        self.max = max_
        self.within_s = within_s
        self.events: list[Any] = []
        self.first_at: float | None = None

    def add(self, event: Any, now: float) -> None:
        if not self.events:
            self.first_at = now
        self.events.append(event)

    @property
    def full(self) -> bool:
        return len(self.events) >= self.max

    def wait_s(self, now: float) -> float | None:
        """How long until the batch is due: 0 when full or its window is over, None if empty."""
        if self.first_at is None:
            return None
        if self.full:
            return 0.0
        return max(0.0, self.first_at + self.within_s - now)

    def take(self) -> list[Any]:
        """The gathered events; gathering starts again with an empty batch."""
        events, self.events, self.first_at = self.events, [], None
        return events


def take_batches(
    stream: Any, max_: int, within_s: float, clock: Callable[[], float] | None = None
) -> AsyncIterator[list[Any]]:
    """Batches of ``stream``'s events (at most ``max_``), each due ``within_s`` after its first.

    Built like Faust's ``take_events``: a processor on the stream gathers its
    events while the stream is consumed in the background (``_enable_passive``),
    with the stream's own acks off; this generator acks a batch's events once
    the agent comes back for the next one (or stops). Registered with the
    stream like Faust's own, so that stopping the stream closes it.
    """
    batches = _take(stream, max_, within_s, clock)
    active = getattr(stream, "_active_agens", None)
    if active is not None:
        active.add(batches)
    return batches


async def _take(
    stream: Any, max_: int, within_s: float, clock: Callable[[], float] | None
) -> AsyncIterator[list[Any]]:
    now = clock or asyncio.get_running_loop().time
    batcher = Batcher(max_, within_s)
    arrived = asyncio.Event()  # the batch has a first event, or is full
    room = asyncio.Event()  # the batch is below max_ again
    room.set()

    async def gather(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches found no current event")
        while batcher.full:  # never more than max_: the stream waits (back-pressure)
            room.clear()
            await stream.wait(room)
        batcher.add(event, now())
        if len(batcher.events) == 1 or batcher.full:
            arrived.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked here, after the agent is done with them
    stream.add_processor(gather)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            wait = batcher.wait_s(now())
            if wait is None or wait > 0:
                arrived.clear()
                timeout = IDLE_CHECK_S if wait is None else wait
                await stream.wait_for_stopped(arrived, timeout=timeout)
                continue
            batch = batcher.take()
            room.set()
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(gather)
