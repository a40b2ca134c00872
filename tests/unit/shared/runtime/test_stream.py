"""FetchBatchStream: an agent's take ends with the fetch its records came in."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from shared.runtime.app import create_app
from shared.runtime.settings import Settings
from shared.runtime.stream import DeliveryNotices, FetchBatchStream, notices_of

LONG_WINDOW_S = 30.0  # a batch the test sees came from the fetch rule, not the window


class Take:
    """A take_events running in the background over an in-memory channel of a service app."""

    def __init__(
        self, tmp_path: Path, window_s: float = LONG_WINDOW_S, max_: int = 100, **kwargs: Any
    ) -> None:
        settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6199, dev_mode=True)
        self.app = create_app(settings)
        self.app.flow_control.resume()  # as after the first assignment
        self.notices: DeliveryNotices = self.app.consumer.notices
        self.channel = self.app.channel()
        self.stream = self.app.stream(self.channel)
        self.batches: list[list[Any]] = []
        self.began: list[float] = []  # when each batch was handed to the agent
        self._task = asyncio.ensure_future(self._take(window_s, max_, kwargs))

    async def _take(self, window_s: float, max_: int, kwargs: dict[str, Any]) -> None:
        async for batch in self.stream.take_events(max_, window_s, **kwargs):
            self.began.append(time.monotonic())
            self.batches.append([event.value for event in batch])

    async def deliver(self, *values: int) -> None:
        """Hand values over as the consumer does with one fetch's records."""
        self.notices.delivering = True
        for value in values:
            await self.channel.send(value=value)

    async def settle(self) -> None:
        """Let the stream take everything queued (no clock involved)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def batch(self) -> list[Any]:
        async def first() -> list[Any]:
            while not self.batches:
                await asyncio.sleep(0.001)
            return self.batches.pop(0)

        return await asyncio.wait_for(first(), timeout=10)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def run(body: Any) -> Any:
    return asyncio.run(body())


def test_service_apps_stream_with_fetch_batches(tmp_path: Path) -> None:
    async def body() -> Any:
        app = create_app(
            Settings(service="dedupe", data_dir=tmp_path, web_port=6199, dev_mode=True)
        )
        return app.stream(app.channel()), notices_of(app), app.consumer.notices

    stream, before, notices = run(body)
    assert isinstance(stream, FetchBatchStream)
    assert before is None and isinstance(notices, DeliveryNotices)  # once the consumer exists


def test_a_fetchs_records_are_one_batch_as_soon_as_the_fetch_is_handed_over(
    tmp_path: Path,
) -> None:
    async def body() -> list[Any]:
        take = Take(tmp_path)
        await take.deliver(1, 2, 3)
        take.notices.delivered()
        batch = await take.batch()
        await take.close()
        return batch

    assert run(body) == [1, 2, 3]


def test_a_drained_queue_does_not_end_the_batch_while_the_fetch_is_being_handed_over(
    tmp_path: Path,
) -> None:
    async def body() -> tuple[list[Any], list[Any]]:
        take = Take(tmp_path)
        await take.deliver(1, 2)
        await take.settle()  # the stream has taken both; the consumer is still delivering
        early = list(take.batches)
        await take.deliver(3)
        take.notices.delivered()
        batch = await take.batch()
        await take.close()
        return early, batch

    early, batch = run(body)
    assert early == [] and batch == [1, 2, 3]


def test_the_last_record_of_a_delivery_already_over_ends_the_batch(tmp_path: Path) -> None:
    """A record the stream takes after the consumer's notice ends the batch by itself."""

    async def body() -> list[Any]:
        take = Take(tmp_path)
        take.notices.delivered()  # the fetch is over: no listener call is left to end it
        await take.channel.send(value=9)
        batch = await take.batch()
        await take.close()
        return batch

    assert run(body) == [9]


def test_without_per_fetch_a_take_keeps_fausts_window(tmp_path: Path) -> None:
    """Agents with a window of their own (off the conversions' path) keep it."""

    async def body() -> tuple[list[Any], list[Any]]:
        take = Take(tmp_path, window_s=0.2, per_fetch=False)
        await take.deliver(4, 5)
        take.notices.delivered()
        await take.settle()
        early = list(take.batches)
        batch = await take.batch()  # at the window's tick
        await take.close()
        return early, batch

    early, batch = run(body)
    assert early == [] and batch == [4, 5]


def test_a_batch_that_is_not_full_starts_no_sooner_than_the_gap_after_the_last(
    tmp_path: Path,
) -> None:
    async def body() -> tuple[list[Any], list[Any], float]:
        take = Take(tmp_path, gap_s=0.3)
        await take.deliver(1)
        take.notices.delivered()
        first = await take.batch()
        await take.deliver(2)
        take.notices.delivered()
        second = await take.batch()
        await take.close()
        return first, second, take.began[1] - take.began[0]

    first, second, apart = run(body)
    assert (first, second) == ([1], [2]) and apart >= 0.3


def test_a_full_batch_is_not_held_back_by_the_gap(tmp_path: Path) -> None:
    """At full speed batches fill up: the gap bounds only the small ones."""

    async def body() -> tuple[list[Any], list[Any]]:
        take = Take(tmp_path, max_=2, gap_s=LONG_WINDOW_S)
        await take.deliver(1, 2, 3, 4)
        batches = await take.batch(), await take.batch()
        await take.close()
        return batches

    assert run(body) == ([1, 2], [3, 4])


def test_a_batch_that_fills_up_during_the_gap_leaves_at_once(tmp_path: Path) -> None:
    async def body() -> tuple[list[Any], list[Any]]:
        take = Take(tmp_path, max_=3, gap_s=LONG_WINDOW_S)
        await take.deliver(1)
        take.notices.delivered()
        first = await take.batch()
        await take.deliver(2)
        take.notices.delivered()
        await take.settle()  # the take now waits out the gap
        await take.deliver(3, 4)
        second = await take.batch()  # well before the gap is over
        await take.close()
        return first, second

    assert run(body) == ([1], [2, 3, 4])


def test_delivery_notices_reach_every_listener_until_forgotten() -> None:
    notices = DeliveryNotices()
    heard: list[str] = []

    def a() -> None:
        heard.append("a")

    def b() -> None:
        heard.append("b")

    notices.listen(a)
    notices.listen(b)
    notices.delivering = True
    notices.delivered()
    notices.forget(a)
    notices.delivered()
    assert heard == ["a", "b", "b"] and notices.delivering is False
