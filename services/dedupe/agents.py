"""Agents of the dedupe service: first accepted event of a key wins.

``DedupeHandler`` is the agent's per-record step (decode, rule, state, sends);
``register`` only wires it to Faust, so the step runs in-process in unit tests
(``tests/support/harness.py``).
"""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from services.dedupe import rules, state
from shared.runtime.app import raw_table, raw_topic
from shared.runtime.batching import Outbox, StateCache, process
from shared.runtime.logging import get_logger, message_fields
from shared.runtime.settings import Settings

SWEEP_INTERVAL_S = 3_600.0
OUTPUTS = ("conversions.accepted", "conversions.duplicates")


class DedupeHandler:
    """One conversions.valid or dedupe.expiry record against the ``seen`` table."""

    def __init__(self, settings: Settings, outbox: Outbox, log: Any) -> None:
        self.settings = settings
        self.outbox = outbox
        self.log = log
        self.expiry_topic = settings.topic_name("dedupe.expiry")

    async def __call__(self, event: Any, seen: StateCache) -> None:
        message = event.message
        current = state.decode(seen.get(message.key, event))
        window = self.settings.dedup_window_s
        if message.topic == self.expiry_topic:
            if current:
                kept = rules.on_expiry(current, int(time.time()), window)
                seen.put(message.key, state.encode(kept), event)
            return
        conv = orjson.loads(message.value)
        new, decision, sends = rules.on_valid(current, message.key, conv, message.value, window)
        if decision is rules.Decision.DUPLICATE:
            self.log.info("duplicate", **message_fields(message))
            self.outbox.metrics.duplicate()
        else:
            seen.put(message.key, state.encode(new), event)
        await self.outbox.send_all(sends)


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    seen = raw_table(app, settings, "seen")

    @app.agent(raw_topic(app, settings, "conversions.valid", "dedupe.expiry"), name="dedupe")
    async def dedupe(stream: Any) -> None:
        outbox = Outbox(app, settings, *OUTPUTS)
        await process(stream, settings, outbox, DedupeHandler(settings, outbox, log), seen, log=log)

    @app.timer(SWEEP_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def sweep_expired() -> None:
        """Ask the owning partitions to drop dedup state past every window.

        Deletions must happen inside the stream (the changelog partition is the
        event's), so the sweep only sends expiry requests keyed like the state.
        """
        now_s = int(time.time())
        expiry = raw_topic(app, settings, "dedupe.expiry")
        count = 0
        for key, raw in list(seen.items()):
            current = state.decode(orjson.loads(raw))
            if rules.prune(current, now_s, settings.dedup_window_s) != current:
                await expiry.send(key=key, value=b'{"op":"expire"}')
                count += 1
        if count:
            log.info("dedup_expiry_requested", keys=count)
