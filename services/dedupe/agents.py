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
                request = orjson.loads(message.value)
                kept = rules.on_expiry(current, request, int(time.time()), window)
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


def partition_items(table: Any) -> list[list[tuple[bytes, bytes]]]:
    """The stored (key, value) pairs of each partition this worker is active for (as
    Faust's ``items`` reads them: no standby, no offset key); one group of them all
    for a store without partitions (in memory)."""
    store: Any = getattr(table, "data", None)
    if not (hasattr(store, "_dbs_for_actives") and hasattr(store, "_visible_items")):
        return [list(table.items())]
    return [list(store._visible_items(db)) for db in store._dbs_for_actives()]


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
        expiry = raw_topic(app, settings, "dedupe.expiry")
        count = 0
        # Partition by partition: each is swept as of its own stream's time
        # (``rules.sweep_as_of``), so that a back-fill in one keeps its state while
        # live events in another are swept as of the clock.
        for stored in partition_items(seen):
            states = [(key, state.decode(orjson.loads(raw))) for key, raw in stored]
            as_of_s, keys = rules.sweep(states, int(time.time()), settings.dedup_window_s)
            request = orjson.dumps(rules.expiry_request(as_of_s))
            for key in keys:
                await expiry.send(key=key, value=request)
            count += len(keys)
        if count:
            log.info("dedup_expiry_requested", keys=count)
