"""shared.runtime.stall_report: when a recovery is silent, and what the report holds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import faust

from shared.runtime.stall_report import (
    loop_tasks,
    recovery_silence,
    stall_report,
    thread_stacks,
    watch_recovery,
)


class FakeRecovery:
    def __init__(self, *, started: float | None, received: dict[str, float], remaining: int):
        self.in_recovery = started is not None
        self._recovery_started_at = started
        self._active_events_received_at = received
        self._remaining = remaining

    def active_remaining_total(self) -> int:
        return self._remaining


def test_no_recovery_running_is_never_silent() -> None:
    assert recovery_silence(FakeRecovery(started=None, received={}, remaining=5), 100.0) is None


def test_a_recovery_without_records_is_silent_since_it_started() -> None:
    recovery = FakeRecovery(started=40.0, received={}, remaining=5)
    assert recovery_silence(recovery, 100.0) == 60.0


def test_a_recovery_is_silent_since_its_last_record_of_any_partition() -> None:
    recovery = FakeRecovery(started=10.0, received={"a": 50.0, "b": 90.0}, remaining=5)
    assert recovery_silence(recovery, 100.0) == 10.0


def test_a_recovery_with_nothing_left_to_read_is_not_silent() -> None:
    """It waits for its end, not for records: the watcher must not report it."""
    assert recovery_silence(FakeRecovery(started=0.0, received={}, remaining=0), 100.0) is None


def test_loop_tasks_follow_each_task_down_to_what_it_waits_for() -> None:
    loop = asyncio.new_event_loop()
    try:
        gate = loop.create_future()

        async def waits_at_the_gate() -> None:
            await gate

        async def calls_the_waiter() -> None:
            await waits_at_the_gate()

        task = loop.create_task(calls_the_waiter(), name="the-waiter")
        loop.run_until_complete(asyncio.sleep(0))
        found = {t["name"]: t for t in loop_tasks(loop)}
        assert found["the-waiter"]["coro"].endswith("calls_the_waiter")
        stack = found["the-waiter"]["stack"]
        assert [frame.rsplit(" ", 1)[-1] for frame in stack[:2]] == [
            "calls_the_waiter",
            "waits_at_the_gate",
        ]
        assert stack[-1].startswith("awaits Future")  # the future itself (FutureIter in C)
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()


def test_thread_stacks_name_each_thread_and_its_innermost_frame() -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="parked-thread")
    thread.start()
    try:
        stacks = thread_stacks()
        assert any("wait" in frame for frame in stacks["parked-thread"][-2:])
        assert "MainThread" in stacks
    finally:
        release.set()
        thread.join()


def test_a_report_of_an_app_not_started_has_every_part_and_does_not_fail() -> None:
    """Parts that do not exist yet say so; the report itself never raises."""
    app = faust.App("stall-report-test", loop=asyncio.new_event_loop())
    report = stall_report(app)
    assert set(report) == {
        "threads",
        "app_tasks",
        "consumer_tasks",
        "flow",
        "recovery",
        "partitions",
        "fetcher",
        "connections",
    }
    assert isinstance(report["threads"], dict)
    assert str(report["partitions"]).startswith("unavailable")
    assert "tables" not in vars(app)  # another thread's report must not build them


class ListLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


class FakeTables:
    def __init__(self, recovery: FakeRecovery) -> None:
        self._recovery = recovery


def test_the_watcher_reports_a_silent_recovery_once_per_report_interval() -> None:
    app = faust.App("stall-watch-test", loop=asyncio.new_event_loop())
    recovery = FakeRecovery(started=0.0, received={}, remaining=3)
    vars(app)["tables"] = FakeTables(recovery)
    log = ListLog()
    now = [100.0]
    watch_recovery(app, log, silent_s=60.0, interval_s=0.01, clock=lambda: now[0])
    deadline = time.monotonic() + 10
    while not log.lines and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # several more looks, all within the report interval
    events = Counter(event for event, _ in log.lines)
    assert events == {"recovery_stalled": 1}
    assert log.lines[0][1]["silent_s"] == 100
    assert "threads" in log.lines[0][1]["report"]


def test_the_watcher_stays_quiet_while_records_keep_coming() -> None:
    app = faust.App("stall-quiet-test", loop=asyncio.new_event_loop())
    recovery = FakeRecovery(started=0.0, received={"a": 95.0}, remaining=3)
    vars(app)["tables"] = FakeTables(recovery)
    log = ListLog()
    thread = watch_recovery(app, log, silent_s=60.0, interval_s=0.01, clock=lambda: 100.0)
    time.sleep(0.1)
    assert thread.is_alive()
    assert log.lines == []
