"""A batch per fetch: an agent's take ends when a fetch's records are all in it.

Faust's ``take_events(max_, within)`` yields a batch when ``max_`` events are
buffered or on a timer that ticks every ``within`` seconds, whatever arrived.
A record therefore waits for the tick after its fetch (half a window on
average, on every hop), and at moderate rates an agent makes a batch per tick
even when its records came in one fetch. The consumer delivers a fetch's
records in one go, so the natural end of a batch is the moment the stream's
queue is empty and the consumer is not in the middle of a delivery: that is
every record the last fetch brought, and waiting longer only adds latency.

``FetchBatchStream.take_events`` is Faust 0.15's with that end added (keep
it in step when upgrading). ``within`` stays as the longest wait, for a
consumer without delivery notices (a test double) and for agents that ask
for windows of their own (off the conversions' path, ``per_fetch=False``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, cast

import faust
from faust.streams import _tracks_buffer_agen
from faust.types import EventT
from mode.utils.futures import notify
from mode.utils.times import Seconds, want_seconds


class DeliveryNotices:
    """What a consumer tells takes: whether it is delivering a fetch, and when one ends.

    The consumer sets ``delivering`` while it hands a fetch's records to the
    streams and calls ``delivered()`` once it has handed them all.
    """

    def __init__(self) -> None:
        self.delivering = False
        self._listeners: list[Callable[[], None]] = []

    def listen(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def forget(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def delivered(self) -> None:
        self.delivering = False
        for listener in list(self._listeners):
            listener()


def notices_of(app: Any) -> DeliveryNotices | None:
    """The delivery notices of the app's consumer, if it gives them."""
    consumer = getattr(app, "_consumer", None)
    notices = getattr(consumer, "notices", None)
    return notices if isinstance(notices, DeliveryNotices) else None


class FetchBatchStream(faust.Stream):  # type: ignore[type-arg]
    """Faust's stream whose ``take_events`` ends a batch with the fetch it came in."""

    @_tracks_buffer_agen  # as Faust's: a take its agent abandoned is closed on stop
    async def take_events(  # noqa: C901 - Faust's own shape, kept for upgrades
        self, max_: int, within: Seconds, *, per_fetch: bool = True, gap_s: float = 0.0
    ) -> AsyncGenerator[Sequence[EventT[Any]], None]:
        """Faust's take, whose batch also ends with its fetch (``per_fetch``), but
        not sooner than ``gap_s`` after the previous batch began unless it is full."""
        buffer: list[Any] = []
        events: list[EventT[Any]] = []
        buffer_full = asyncio.Event()
        buffer_consumed = asyncio.Event()
        timeout = want_seconds(within) if within else None
        stream_enable_acks: bool = self.enable_acks
        buffer_consuming: asyncio.Future[Any] | None = None
        channel_it = aiter(self.channel)
        queue = cast(Any, self.channel).queue
        notices = notices_of(self.app) if per_fetch else None
        filled = asyncio.Event()  # the batch holds max_ events: no gap for it
        last_began = 0.0

        def fetch_is_in() -> None:
            # The consumer handed over a whole fetch; what this stream has of it is a batch.
            if buffer and queue.empty():
                buffer_full.set()

        async def add_to_buffer(value: Any) -> Any:
            try:
                nonlocal buffer_consuming
                if buffer_consuming is not None:
                    try:
                        await buffer_consuming
                    finally:
                        buffer_consuming = None
                buffer.append(value)
                event = self.current_event
                if event is None:
                    raise RuntimeError("Take buffer found current_event is None")
                events.append(event)
                if len(buffer) >= max_:
                    filled.set()
                    buffer_full.set()
                    buffer_consumed.clear()
                    await self.wait(buffer_consumed)  # type: ignore[arg-type]
                elif notices is not None and not notices.delivering and queue.empty():
                    buffer_full.set()  # the last record of its fetch
            except asyncio.CancelledError:  # pragma: no cover
                raise
            except Exception as exc:
                self.log.exception("Error adding to take buffer: %r", exc)
                await self.crash(exc)
            return value

        self.enable_acks = False
        self.add_processor(add_to_buffer)
        if notices is not None:
            notices.listen(fetch_is_in)
        self._enable_passive(cast(Any, channel_it))
        try:
            while not self.should_stop:
                await self.wait_for_stopped(buffer_full, timeout=timeout)  # type: ignore[arg-type]
                if buffer:
                    wait_s = last_began + gap_s - time.monotonic()
                    if wait_s > 0 and not filled.is_set():  # later records still join it
                        await self.wait_for_stopped(filled, timeout=wait_s)  # type: ignore[arg-type]
                    buffer_consuming = self.loop.create_future()
                    last_began = time.monotonic()
                    try:
                        yield list(events)
                    finally:
                        filled.clear()
                        buffer.clear()
                        for event in events:
                            await self.ack(event)
                        events.clear()
                        notify(buffer_consuming)
                        buffer_full.clear()
                        buffer_consumed.set()
                else:
                    buffer_full.clear()
        finally:
            self.enable_acks = stream_enable_acks
            self._processors.remove(add_to_buffer)
            if notices is not None:
                notices.forget(fetch_is_in)
