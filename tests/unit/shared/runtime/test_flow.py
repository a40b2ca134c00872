"""KeepQueuedFlowControl: resuming a running flow keeps the records already queued."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faust.types import TP
from mode.utils.queues import FlowControlQueue

from shared.runtime.app import create_app, queued_partitions
from shared.runtime.flow import KeepQueuedFlowControl
from shared.runtime.settings import Settings


def queue_with(flow: KeepQueuedFlowControl, *items: str) -> FlowControlQueue[str]:
    """A stream queue as Faust makes them (cleared on resume), holding ``items``."""
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    for item in items:
        queue.force_put_nowait(item)
    return queue


def test_resume_of_a_running_flow_keeps_what_is_queued() -> None:
    """Recovery's second resume() (after the stream partitions were resumed) loses nothing."""

    async def run() -> int:
        flow = KeepQueuedFlowControl()
        flow.resume()  # the end of the rebalance's suspension
        queue = queue_with(flow, "record 187", "record 188")
        flow.resume()  # recovery's last resume(), the flow already running
        return queue.qsize()

    assert asyncio.run(run()) == 2


def test_resume_after_a_suspension_empties_the_queues() -> None:
    """Records queued before a rebalance are read again after the seek: dropped on resume."""

    async def run() -> int:
        flow = KeepQueuedFlowControl()
        flow.resume()
        queue = queue_with(flow, "record of the old assignment")
        flow.suspend()
        flow.resume()
        return queue.qsize()

    assert asyncio.run(run()) == 0


def test_a_new_flow_starts_suspended_and_resume_activates_it() -> None:
    async def run() -> tuple[bool, bool]:
        flow = KeepQueuedFlowControl()
        before = flow.is_active()
        flow.resume()
        return before, flow.is_active()

    assert asyncio.run(run()) == (False, True)


def test_service_apps_use_the_keeping_flow_control(tmp_path: Path) -> None:
    settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6199, dev_mode=True)
    assert isinstance(create_app(settings).flow_control, KeepQueuedFlowControl)


class Queued:
    """A stream event as far as queued_partitions reads it."""

    def __init__(self, tp: TP) -> None:
        self.message = type("Message", (), {"tp": tp})()


def test_queued_partitions_are_those_of_the_events_in_the_stream_queues(tmp_path: Path) -> None:
    """What heal_lost is told is still on its way to an agent, not lost."""
    settings = Settings(service="dedupe", data_dir=tmp_path, web_port=6199, dev_mode=True)
    app = create_app(settings)
    waiting = TP("ns.conversions.raw", 3)

    async def run() -> set[TP]:
        flow = app.flow_control
        used = type("Channel", (), {"_queue": queue_with(flow, Queued(waiting))})()  # type: ignore[arg-type]
        unused = type("Channel", (), {"_queue": None})()
        app.topics._topics.update({used, unused})
        return queued_partitions(app)

    assert asyncio.run(run()) == {waiting}
