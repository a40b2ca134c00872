"""What a worker whose table recovery has gone quiet is doing, written to its log.

The chaos suite saw a worker's recovery receive no changelog record for minutes
(docs/reliability.md, "A dedupe recovery that received nothing for eight
minutes"). Such a worker is not ready, so its web views and timers are not
running yet, and gdb or py-spy could only guess from the outside what it waited
for. This module answers from the inside (its report is what found that cause):

* ``stall_report(app)``: every thread's stack, every asyncio task of the app's
  loop and of its consumer thread's loop (where each coroutine is suspended),
  Faust's flow and recovery state, and aiokafka's view of each assigned
  partition, its fetcher and its broker connections;
* ``watch_recovery(app, log)``: a daemon thread (not a task: the loops may be
  the thing that is stuck) that logs ``recovery_stalled`` with the report when
  a recovery has received no changelog record for ``RECOVERY_SILENT_S``.

Reading another thread's objects without a lock can see them mid-change; every
part of the report is best effort and a part that fails says so instead.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

from shared.runtime.changelog_reads import recovery_of

#: A recovery this long without a changelog record is reported.
RECOVERY_SILENT_S = 60.0
#: How often the watcher looks, and the least time between two reports.
WATCH_INTERVAL_S = 10.0
REPORT_EVERY_S = 120.0
#: Frames kept per stack: the innermost ones say where it waits.
STACK_DEPTH = 12


def recovery_silence(recovery: Any, now: float) -> float | None:
    """Seconds since ``recovery`` last received a changelog record (or started, if
    none yet); None when no recovery is running or it has nothing left to read."""
    if not getattr(recovery, "in_recovery", False):
        return None
    started = getattr(recovery, "_recovery_started_at", None)
    if started is None:
        return None
    try:
        if recovery.active_remaining_total() <= 0:
            return None
    except Exception:  # noqa: BLE001 - mid-change: judge by the times alone
        pass
    received: list[float] = list(getattr(recovery, "_active_events_received_at", {}).values())
    return now - max([float(started), *received])


def _frame(frame: Any) -> str:
    return f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {frame.f_code.co_name}"


def await_chain(coro: Any) -> list[str]:
    """Where a suspended coroutine waits: its frame and those of what it awaits, down
    to the innermost (``Task.get_stack`` gives only the outermost one)."""
    chain: list[str] = []
    while coro is not None and len(chain) < 64:
        frame = next(
            (f for a in ("cr_frame", "gi_frame", "ag_frame") if (f := getattr(coro, a, None))),
            None,
        )
        if frame is None:
            chain.append(f"awaits {type(coro).__name__}")
            break
        chain.append(_frame(frame))
        coro = next(
            (n for a in ("cr_await", "gi_yieldfrom", "ag_await") if (n := getattr(coro, a, None))),
            None,
        )
    return chain[-STACK_DEPTH:]


def _task(task: asyncio.Task[Any]) -> dict[str, Any]:
    coro = task.get_coro()
    return {
        "name": task.get_name(),
        "coro": getattr(coro, "__qualname__", repr(coro)),
        "stack": await_chain(coro),
    }


def thread_stacks() -> dict[str, list[str]]:
    """Every thread's Python stack, innermost frame last."""
    names = {t.ident: t.name for t in threading.enumerate()}
    found = {}
    for ident, frame in sys._current_frames().items():
        stack = [
            f"{s.filename.rsplit('/', 2)[-1]}:{s.lineno} {s.name}"
            for s in traceback.extract_stack(frame)
        ]
        found[names.get(ident, str(ident))] = stack[-STACK_DEPTH:]
    return found


def loop_tasks(loop: asyncio.AbstractEventLoop | None) -> list[dict[str, Any]]:
    """Every unfinished task of ``loop``: its coroutine and where it is suspended."""
    if loop is None:
        return []
    return [_task(task) for task in list(asyncio.all_tasks(loop)) if not task.done()]


def partition_states(aiokafka_consumer: Any) -> dict[str, dict[str, Any]]:
    """aiokafka's state of each assigned partition."""
    assignment = aiokafka_consumer._subscription.subscription.assignment
    states = {}
    for tp in sorted(assignment.tps):
        state = assignment.state_value(tp)
        states[f"{tp.topic}:{tp.partition}"] = {
            "paused": state.paused,
            "position": state.position if state.has_valid_position else None,
            "awaiting_reset": state.awaiting_reset,
            "highwater": state.highwater,
            "last_answer_ms": state.timestamp,
        }
    return states


def fetcher_state(fetcher: Any) -> dict[str, Any]:
    """What aiokafka's fetcher holds: fetches in flight, records not yet taken, tasks."""
    return {
        "in_flight_nodes": sorted(fetcher._in_flight),
        "buffered": {
            f"{tp.topic}:{tp.partition}": getattr(
                getattr(records, "_partition_records", None), "next_fetch_offset", None
            )
            for tp, records in list(fetcher._records.items())
        },
        "pending_tasks": [_task(t) for t in list(fetcher._pending_tasks) if not t.done()],
        "waiters": len(fetcher._fetch_waiters),
        "routine_done": fetcher._fetch_task.done(),
        "sessions": {
            node: {"id": s.session_id, "epoch": s.epoch, "partitions": len(s.partitions)}
            for node, s in getattr(fetcher, "_sessions", {}).items()
        },
    }


def connection_states(client: Any) -> dict[str, dict[str, Any]]:
    """Each broker connection: requests awaiting an answer, whether it reads."""
    client = getattr(client, "_client", client)  # under the fetch wrappers
    client = getattr(client, "_client", client)
    found = {}
    for (node, group), conn in list(client._conns.items()):
        writer, reader, read_task = conn._writer, conn._reader, conn._read_task
        transport = getattr(writer, "transport", None)
        found[f"{node}/{group}"] = {
            "connected": conn.connected(),
            "awaiting_answers": len(conn._requests),
            "reading": transport.is_reading() if transport is not None else None,
            "unread_buffer": len(getattr(reader, "_buffer", b"")) if reader else None,
            "reader_done": read_task.done() if read_task is not None else None,
            "reader_stack": await_chain(read_task.get_coro()) if read_task is not None else [],
        }
    return found


def _part(build: Callable[[], Any]) -> Any:
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - a report must never fail the worker
        return f"unavailable: {exc!r}"


def stall_report(app: Any) -> dict[str, Any]:
    """Everything above for ``app``'s worker, each part best effort."""
    # Any: each part fails alone (and says so) when an object is not there yet.
    consumer: Any = getattr(app, "_consumer", None)
    thread: Any = getattr(consumer, "_thread", None)
    kafka: Any = getattr(thread, "_consumer", None)
    recovery: Any = recovery_of(app)
    return {
        "threads": _part(thread_stacks),
        "app_tasks": _part(lambda: loop_tasks(app.loop)),
        "consumer_tasks": _part(lambda: loop_tasks(thread.thread_loop)),
        "flow": _part(
            lambda: {
                "consumer_flow_active": consumer.flow_active,
                "app_flow_active": app.flow_control.is_active(),
                "active_partitions": len(consumer._active_partitions or ()),
                "paused_partitions": len(consumer._paused_partitions),
                "generation": app.consumer_generation_id,
            }
        ),
        "recovery": _part(
            lambda: {
                "in_recovery": recovery.in_recovery,
                "active_remaining": {
                    f"{tp.topic}:{tp.partition}": {
                        "remaining": n,
                        "received": recovery.active_offsets.get(tp),
                        # Faust's fetch loop drops a record below its read offset.
                        "read_offset": consumer._read_offset.get(tp),
                    }
                    for tp, n in recovery.active_remaining().items()
                    if n
                },
                "signal_end": recovery.signal_recovery_end.is_set(),
            }
        ),
        "partitions": _part(lambda: partition_states(kafka)),
        "fetcher": _part(lambda: fetcher_state(kafka._fetcher)),
        "connections": _part(lambda: connection_states(kafka._client)),
    }


def watch_recovery(
    app: Any,
    log: Any,
    *,
    silent_s: float = RECOVERY_SILENT_S,
    interval_s: float = WATCH_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> threading.Thread:
    """Start the daemon thread that logs ``recovery_stalled`` (see the module)."""

    def watch() -> None:
        last_report = -REPORT_EVERY_S
        while True:
            time.sleep(interval_s)
            silence = _part(partial(recovery_silence, recovery_of(app), now := clock()))
            if not isinstance(silence, float) or silence < silent_s:
                continue
            if now - last_report < REPORT_EVERY_S:
                continue
            last_report = now
            log.warning("recovery_stalled", silent_s=round(silence), report=stall_report(app))

    thread = threading.Thread(target=watch, name="recovery-watch", daemon=True)
    thread.start()
    return thread
