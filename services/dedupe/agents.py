"""Agents of the dedupe service: first accepted event of a key wins."""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from services.dedupe.logic import Decision, decide, prune
from shared.runtime.app import raw_table, raw_topic
from shared.runtime.batching import Outbox, process
from shared.runtime.logging import get_logger, message_fields
from shared.runtime.settings import Settings

SWEEP_INTERVAL_S = 3_600.0


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    seen = raw_table(app, settings, "seen")
    expiry_topic = settings.topic_name("dedupe.expiry")

    @app.agent(raw_topic(app, settings, "conversions.valid", "dedupe.expiry"), name="dedupe")
    async def dedupe(stream: Any) -> None:
        outbox = Outbox(app, settings, "conversions.accepted", "conversions.duplicates")

        async def handle(event: Any, cache: Any) -> None:
            message = event.message
            key = message.key
            state = cache.get(key, event)
            if message.topic == expiry_topic:
                if state is not None:
                    kept = prune(state, int(time.time()), settings.dedup_window_s)
                    cache.put(key, kept or None, event)
                return
            conv = orjson.loads(message.value)
            window = settings.dedup_window_s
            outcome = decide(state, int(conv["event_time"]), conv["raw_ref"], window)
            if outcome.decision is Decision.DUPLICATE:
                audit = {
                    "conversion_key": conv["conversion_key"],
                    "raw_ref": conv["raw_ref"],
                    "source": conv["source"],
                    "ad_account_id": conv["ad_account_id"],
                    "event_time": conv["event_time"],
                    "original_event_time": outcome.original_event_time,
                }
                await outbox.send("conversions.duplicates", key, audit)
                log.info("duplicate", **message_fields(message))
                return
            # A redelivery rewrites its state too: after a kill -9 the local
            # store may hold a write whose changelog record never left.
            cache.put(key, outcome.state, event)
            await outbox.send("conversions.accepted", key, message.value)

        await process(stream, settings, outbox, handle, seen, log=log)

    @app.timer(SWEEP_INTERVAL_S)
    async def sweep_expired() -> None:
        """Ask the owning partitions to drop dedup state past every window.

        Deletions must happen inside the stream (the changelog partition is the
        event's), so the sweep only sends expiry requests keyed like the state.
        """
        horizon = int(time.time())
        expiry = raw_topic(app, settings, "dedupe.expiry")
        count = 0
        for key, raw in list(seen.items()):
            state = orjson.loads(raw)
            if prune(state, horizon, settings.dedup_window_s) != state:
                await expiry.send(key=key, value=b'{"op":"expire"}')
                count += 1
        if count:
            log.info("dedup_expiry_requested", keys=count)
