"""Fetches paced: at most one request per broker every ``interval_s``.

A worker whose agents feed each other (identity_match's owner -> keys -> owner,
attribute's users -> publisher) fetches with no minimum size, so that the broker
answers as soon as one of its own agents' records lands. With a minimum size its
next fetch is already waiting at the broker when its batch sends the next hop's
records, and they wait out the whole fetch wait, at every internal hop
(docs/benchmarks.md, "Fetches that wake on a worker's own records"). With no
minimum, though, a steady trickle of records (engagements arriving one by one)
would answer every fetch at once, and the worker would fetch as fast as it can
turn a request around. The pace bounds that: a request leaves no sooner than
``interval_s`` after the one before to the same broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


class FetchPace:
    """When each broker's last fetch left, and how long the next one must wait."""

    def __init__(self, interval_s: float, clock: Clock = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[int, float] = {}

    def wait_s(self, node_id: int) -> float:
        """Seconds until a fetch to ``node_id`` may leave (0 when it may now)."""
        last = self._last.get(node_id)
        return 0.0 if last is None else max(0.0, last + self.interval_s - self.clock())

    def sent(self, node_id: int) -> None:
        self._last[node_id] = self.clock()


def pace_fetches(fetcher: Any, interval_s: float, sleep: Sleep = asyncio.sleep) -> None:
    """Make aiokafka's ``fetcher`` send each broker at most one fetch every ``interval_s``.

    aiokafka keeps one fetch in flight per broker and handles it in
    ``_proc_fetch_request``; the wait goes before its send, so the request is the
    one aiokafka built and its answer is checked against the positions as usual.
    """
    if interval_s <= 0 or getattr(fetcher, "_convmesh_pace", None) is not None:
        return
    pace = FetchPace(interval_s)
    send = fetcher._proc_fetch_request

    async def paced(assignment: Any, node_id: int, request: Any) -> bool:
        wait = pace.wait_s(node_id)
        if wait > 0:
            try:
                await sleep(wait)
            except asyncio.CancelledError:
                # As aiokafka's own: closing or a new assignment, the fetch is moot. A
                # request that never left must say so (a fetch session's next one
                # then names every partition again).
                abandoned = getattr(request, "abandoned", None)
                if abandoned is not None:
                    abandoned()
                return False
        pace.sent(node_id)
        result: bool = await send(assignment, node_id, request)
        return result

    fetcher._convmesh_pace = pace
    fetcher._proc_fetch_request = paced
