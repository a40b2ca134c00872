"""Batches of a Faust stream that keep filling while the previous batch is processed.

Faust's ``Stream.take_events(max_, within)`` stops buffering while the caller
processes a batch, and after each batch waits ``within`` seconds (or for
``max_`` events) before the next one. Two costs follow (docs/benchmarks.md):

- latency: every hop holds a record up to ``within`` after the previous batch
  ended, even when the record was there all along;
- under load, a short ``within`` starves: the next batch only gets what Faust's
  per-event path can pump into the buffer within the window, so batches stay
  small exactly when the machine is busy, and per-batch costs multiply
  (measured: ``within`` 0.02 s could not keep half the full rate).

``take_batches`` keeps buffering during processing (up to ``max_`` events,
then the stream waits: back-pressure) and measures the linger from the first
event of the next batch, not from the end of the last one. A batch is handed
out when it holds ``max_`` events, or when its first event has waited
``linger_s``. Records that arrived while the previous batch ran are usually
past their linger already, so a busy hop runs batch after batch without
waiting, and its batches grow with the load (group commit), while an idle hop
holds a lone record at most ``linger_s``.

Acking is Faust's: events are acked after the caller has processed their
batch (the generator's ``finally``), never before, so an offset is never
committed for an event still in the buffer or in processing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from mode.utils.aiter import aiter


def take_batches(stream: Any, max_: int, linger_s: float) -> AsyncGenerator[list[Any], None]:
    """Batches of at most ``max_`` events of ``stream`` (see the module docstring).

    The generator is registered with the stream, as Faust's own ``take``
    generators are, so that stopping the stream closes it (and runs its acks).
    """
    if max_ < 1 or linger_s < 0:
        raise ValueError("take_batches needs max_ >= 1 and linger_s >= 0")
    batches = _batches(stream, max_, linger_s)
    active = getattr(stream, "_active_agens", None)
    if active is not None:
        active.add(batches)
    return batches


async def _batches(stream: Any, max_: int, linger_s: float) -> AsyncGenerator[list[Any], None]:
    loop = asyncio.get_running_loop()
    buffered: list[Any] = []
    first_at = 0.0  # loop time at which the first buffered event arrived
    arrived = asyncio.Event()  # the buffer went from empty to non-empty
    full = asyncio.Event()  # the buffer holds max_ events
    room = asyncio.Event()  # the buffer has room again
    room.set()

    async def add_to_buffer(value: Any) -> Any:
        nonlocal first_at
        while len(buffered) >= max_:
            room.clear()
            await stream.wait(room)
            if stream.should_stop:
                return value  # not buffered, never acked: read again after the restart
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches found no current event")
        if not buffered:
            first_at = loop.time()
            arrived.set()
        buffered.append(event)
        if len(buffered) >= max_:
            full.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked below, once the batch is processed
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not buffered:
                arrived.clear()
                if (await stream.wait(arrived)).stopped:  # no timeout: stopped or crashed
                    break
            wait_s = linger_s - (loop.time() - first_at)
            if len(buffered) < max_ and wait_s > 0:
                full.clear()
                # mode reports a timeout as "stopped" too: the stream's own flag decides.
                await stream.wait(full, timeout=wait_s)
                if stream.should_stop:
                    break
            batch = buffered[:]  # add_to_buffer never lets it pass max_
            buffered.clear()
            full.clear()
            room.set()
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
