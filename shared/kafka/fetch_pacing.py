"""Fetches that wake on the conversions' path, paced.

A worker whose agents feed each other (identity_match's owner -> keys -> owner,
attribute's users -> publisher) used to pay a whole fetch wait at each of those
hops: its next fetch is already waiting at the broker, held for the minimum size,
when its own batch sends the next hop's records (docs/benchmarks.md, "Fetches that
wake on the conversions' path"). After an answer that brought records of the
topics a conversion travels (``WakeOnPath``), its next fetch asks for no minimum
size: the broker answers as soon as the next hop's records land. Other records
(engagements, signals, arriving one by one at rates far above the conversions')
leave the minimum in place, so that a trickle of them is not fetched record by
record. And a fetch leaves no sooner than ``interval_s`` after the one before to
the same broker (``pace_fetches``), whatever the minimum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka.protocol.fetch import FetchRequest

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


class WakeOnPath:
    """Sets the fetcher's minimum size for its next request from the last answer: none
    after an answer with records of ``topics``, else ``min_bytes``."""

    def __init__(self, fetcher: Any, topics: Iterable[str], min_bytes: int) -> None:
        self.fetcher = fetcher
        self.topics = frozenset(topics)
        self.min_bytes = min_bytes

    def saw(self, response: Any) -> None:
        woke = any(
            partition[-1]  # the record set's bytes, last in every version's partition data
            for topic, partitions in response.topics
            if topic in self.topics
            for partition in partitions
        )
        self.fetcher._fetch_min_bytes = 1 if woke else self.min_bytes


class WakeClient:
    """aiokafka's client as the fetcher sees it: each fetch answer goes past
    ``WakeOnPath`` on its way back; everything else is the client's own."""

    def __init__(self, client: Any, wake: WakeOnPath) -> None:
        self._client = client
        self._wake = wake

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        response = await self._client.send(node_id, request, **kwargs)
        if isinstance(request, FetchRequest):
            self._wake.saw(response)
        return response


def wake_on_path(fetcher: Any, topics: Iterable[str]) -> None:
    """Make ``fetcher`` drop its minimum size after an answer with records of ``topics``
    (real names). Call after the fetch sessions are in place: it wraps their client."""
    if isinstance(fetcher._client, WakeClient):
        return
    wake = WakeOnPath(fetcher, topics, fetcher._fetch_min_bytes)
    fetcher._client = WakeClient(fetcher._client, wake)
