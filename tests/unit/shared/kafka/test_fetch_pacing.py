"""shared.kafka.fetch_pacing: fetches that wake on the conversions' path, one per broker
every interval at most."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.protocol.fetch import FetchRequest

from shared.kafka.fetch_pacing import (
    FetchPace,
    WakeClient,
    WakeOnPath,
    pace_fetches,
    wake_on_path,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeFetcher:
    """aiokafka's fetcher as the pace sees it: ``_proc_fetch_request`` per request."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Any]] = []

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        self.sent.append((node_id, request))
        return True


class Request:
    def __init__(self) -> None:
        self.was_abandoned = False

    def abandoned(self) -> None:
        self.was_abandoned = True


def test_the_first_fetch_to_a_broker_need_not_wait() -> None:
    assert FetchPace(0.02, Clock()).wait_s(1) == 0.0


def test_a_fetch_waits_out_the_rest_of_the_interval_since_the_last_one() -> None:
    clock = Clock()
    pace = FetchPace(0.02, clock)
    pace.sent(1)
    clock.now += 0.005
    assert abs(pace.wait_s(1) - 0.015) < 1e-9
    clock.now += 0.05
    assert pace.wait_s(1) == 0.0


def test_each_broker_has_its_own_pace() -> None:
    pace = FetchPace(0.02, Clock())
    pace.sent(1)
    assert pace.wait_s(2) == 0.0 and pace.wait_s(1) > 0


async def test_a_paced_fetcher_sleeps_before_a_fetch_that_comes_too_soon() -> None:
    fetcher = FakeFetcher()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    pace_fetches(fetcher, 10.0, sleep=sleep)
    assert await fetcher._proc_fetch_request(None, 1, "a")
    assert await fetcher._proc_fetch_request(None, 1, "b")
    assert [r for _, r in fetcher.sent] == ["a", "b"]
    assert len(slept) == 1 and 9.0 < slept[0] <= 10.0


async def test_a_fetch_cancelled_while_it_waits_is_abandoned_not_sent() -> None:
    """Closing or a new assignment cancels it: like aiokafka's own, it returns False, and
    the request learns it never left (a fetch session's next request is then full)."""
    fetcher = FakeFetcher()

    async def sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    pace_fetches(fetcher, 10.0, sleep=sleep)
    await fetcher._proc_fetch_request(None, 1, Request())
    late = Request()
    assert await fetcher._proc_fetch_request(None, 1, late) is False
    assert late.was_abandoned and len(fetcher.sent) == 1


def test_no_interval_leaves_the_fetcher_as_it_was() -> None:
    fetcher = FakeFetcher()
    method = fetcher._proc_fetch_request
    pace_fetches(fetcher, 0.0)
    assert fetcher._proc_fetch_request == method


def fetch_answer(*parts: tuple[str, bytes | None]) -> Any:
    """A fetch answer (version 11 layout): per (topic, record bytes) one partition, the
    records last."""
    return SimpleNamespace(topics=[(t, [(0, 0, 5, 5, 0, [], -1, records)]) for t, records in parts])


def v0_answer(topic: str, records: bytes) -> Any:
    """Version 0: partition, error, high watermark, records."""
    return SimpleNamespace(topics=[(topic, [(0, 0, 5, records)])])


class Answering:
    def __init__(self, *responses: Any) -> None:
        self.responses = list(responses)
        self.min_bytes_sent: list[int] = []
        self.other = "the client's own"

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request, FetchRequest):
            return "metadata"
        self.min_bytes_sent.append(request._min_bytes)
        return self.responses.pop(0) if self.responses else fetch_answer()


def a_fetch() -> FetchRequest:
    return FetchRequest(60, 65536, 50_000_000, 0, [("a", [(0, 10, 100)])])


PATH = ["ns.identity.lookups"]


def test_records_of_a_path_topic_wake_that_broker() -> None:
    wake = WakeOnPath(PATH)
    wake.saw(1, fetch_answer(("ns.ads.engagements", b""), ("ns.identity.lookups", b"rec")))
    assert wake.woke(1) and not wake.woke(2)


def test_an_answer_without_path_records_brings_the_minimum_back() -> None:
    """Engagements arriving one by one are not fetched record by record; no records
    decode as empty bytes or None."""
    wake = WakeOnPath(PATH)
    wake.saw(1, fetch_answer(("ns.identity.lookups", b"rec")))
    wake.saw(1, fetch_answer(("ns.ads.engagements", b"rec"), ("ns.identity.lookups", None)))
    assert not wake.woke(1)


def test_older_answer_layouts_carry_the_records_last_too() -> None:
    wake = WakeOnPath(PATH)
    wake.saw(1, v0_answer("ns.identity.lookups", b"rec"))
    assert wake.woke(1)


async def test_the_next_fetch_to_a_woken_broker_asks_for_no_minimum() -> None:
    answering = Answering(fetch_answer(("ns.identity.lookups", b"rec")), fetch_answer())
    fetcher = SimpleNamespace(_client=answering)
    wake_on_path(fetcher, PATH)
    wake_on_path(fetcher, PATH)  # once only
    assert isinstance(fetcher._client, WakeClient) and fetcher._client._client is answering
    await fetcher._client.send(1, "not a fetch")
    await fetcher._client.send(1, a_fetch())  # brings path records
    await fetcher._client.send(2, a_fetch())  # another broker: not woken
    await fetcher._client.send(1, a_fetch())
    assert answering.min_bytes_sent == [65536, 65536, 1]
    assert fetcher._client.other == "the client's own"
