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

from shared.kafka.fetch_sessions import ClientWrapper

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
    """Per broker, whether its last fetch answer brought records of ``topics``: then the
    next fetch to that broker asks for no minimum size."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self._woke: set[int] = set()

    def woke(self, node_id: int) -> bool:
        return node_id in self._woke

    def saw(self, node_id: int, response: Any) -> None:
        brought = any(
            partition[-1]  # the record set's bytes, last in every version's partition data
            for topic, partitions in response.topics
            if topic in self.topics
            for partition in partitions
        )
        if brought:
            self._woke.add(node_id)
        else:
            self._woke.discard(node_id)


class WakeClient(ClientWrapper):
    """A fetch to a broker whose last answer brought path records leaves with no minimum
    size, and each answer goes past ``WakeOnPath``."""

    def __init__(self, client: Any, wake: WakeOnPath) -> None:
        super().__init__(client)
        self._wake = wake

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request, FetchRequest):
            return await self._client.send(node_id, request, **kwargs)
        if self._wake.woke(node_id):
            request._min_bytes = 1  # read when the request is encoded, below
        response = await self._client.send(node_id, request, **kwargs)
        self._wake.saw(node_id, response)
        return response


def wake_on_path(fetcher: Any, topics: Iterable[str]) -> None:
    """Make ``fetcher``'s next fetch to a broker ask for no minimum size after an answer
    from it with records of ``topics`` (real names). Call after the fetch sessions are in
    place: it wraps their client."""
    if not isinstance(fetcher._client, WakeClient):
        fetcher._client = WakeClient(fetcher._client, WakeOnPath(topics))
