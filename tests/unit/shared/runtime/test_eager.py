"""shared.runtime.eager: a coroutine run in place until it first suspends."""

from __future__ import annotations

import asyncio

import pytest
from mode import Service

from shared.runtime import eager


async def _add(a: int, b: int) -> int:
    return a + b


async def _fail_at_once() -> None:
    raise ValueError("bad record")


async def _stuck_until_cancelled(cleaned: list[bool]) -> None:
    """A callback blocked for good (a full buffer in a rebalance); notes its cleanup."""
    try:
        await asyncio.Event().wait()
    finally:
        cleaned.append(True)


def test_a_coroutine_that_never_suspends_finishes_in_place_with_its_result() -> None:
    assert eager.start(_add(2, 3)) == (True, 5)


def test_an_exception_before_the_first_suspension_is_raised_by_start() -> None:
    with pytest.raises(ValueError, match="bad record"):
        eager.start(_fail_at_once())


def test_an_awaitable_that_is_not_a_coroutine_is_left_to_await() -> None:
    async def scenario() -> tuple[bool, int]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(7)
        finished, rest = eager.start(future)
        assert rest is future
        return finished, await rest

    assert asyncio.run(scenario()) == (False, 7)


def test_a_coroutine_that_suspends_is_finished_by_awaiting_the_rest() -> None:
    steps: list[str] = []

    async def blocked(gate: asyncio.Event) -> str:
        steps.append("before")
        await gate.wait()
        steps.append("after")
        return "done"

    async def scenario() -> tuple[bool, str]:
        gate = asyncio.Event()
        finished, rest = eager.start(blocked(gate))
        assert steps == ["before"]
        asyncio.get_running_loop().call_soon(gate.set)
        return finished, await rest

    assert asyncio.run(scenario()) == (False, "done")
    assert steps == ["before", "after"]


def test_the_rest_survives_several_suspensions_and_sleep_zero() -> None:
    async def chatty() -> int:
        total = 0
        for step in range(3):
            await asyncio.sleep(0)
            total += step
        await asyncio.sleep(0.001)
        return total

    async def scenario() -> int:
        finished, rest = eager.start(chatty())
        assert not finished
        return int(await asyncio.ensure_future(rest))

    assert asyncio.run(scenario()) == 3


def test_an_exception_after_a_suspension_comes_out_of_the_rest() -> None:
    async def late_failure() -> None:
        await asyncio.sleep(0)
        raise KeyError("late")

    async def scenario() -> None:
        _, rest = eager.start(late_failure())
        await rest

    with pytest.raises(KeyError, match="late"):
        asyncio.run(scenario())


def test_cancelling_the_rest_cancels_the_coroutine_inside_it() -> None:
    """As under wait_first: a rebalance cancels a blocked callback, whose
    cleanup then runs."""
    cleaned: list[bool] = []

    async def scenario() -> None:
        _, rest = eager.start(_stuck_until_cancelled(cleaned))
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert cleaned == [True]


def test_a_blocked_rest_loses_to_a_flow_suspension_under_wait_first() -> None:
    """The fetch loop's use: ``wait_first(rest, suspend_flow.wait())`` returns
    when the flow is suspended, and the blocked callback is cancelled."""
    cleaned: list[bool] = []

    async def scenario() -> list[object]:
        service = Service()
        suspend = asyncio.Event()
        _, rest = eager.start(_stuck_until_cancelled(cleaned))
        asyncio.get_running_loop().call_soon(suspend.set)
        results = await service.wait_first(rest, suspend.wait())
        await asyncio.sleep(0)
        return list(results.done)

    assert len(asyncio.run(scenario())) == 1
    assert cleaned == [True]
