"""Run a coroutine in place until it first suspends, without a task.

Faust's fetch loop hands every record to the conductor's callback inside
``wait_first(callback(message), suspend_flow.wait())``: four tasks and an
``asyncio.wait`` per record, so that a rebalance can cut a callback short
that is blocked (flow control held, a full stream buffer, a full producer
buffer). In steady running the callback never blocks: it decodes the record
and puts it in a queue. Profiles of the mesh at full speed put that
per-record scheduling at about a tenth of a worker's CPU.

``start`` runs the coroutine to its end in place when it does not suspend,
which is the common case; only a coroutine that does suspend becomes an
awaitable (``Rest``) that the caller then awaits under ``wait_first`` as
before, so a rebalance can still cut it short.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


class Rest:
    """The rest of a coroutine that suspended once in ``start``: awaiting it
    (or a task made of it) drives it on, passing values and exceptions through
    exactly as ``await coro`` would have from that point."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - cancellation and the like go in
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def start(coro: Awaitable[Any]) -> tuple[bool, Any]:
    """``(True, result)`` if ``coro`` ran to its end without suspending, else
    ``(False, rest)`` with ``rest`` an awaitable of the remainder.

    An exception the coroutine raises before it suspends is raised here. An
    awaitable that is not a coroutine is not started: it is the rest.
    """
    if not isinstance(coro, types.CoroutineType):  # cheaper than the ABC, once per record
        return False, coro
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, Rest(coro, yielded)
