"""Agents of the aggregate service.

* ``results``: per conversion_key, the last result counted; turns a new
  version into ``remove`` (old row) and ``add`` (new row) deltas, keyed by ad
  account so that all rows of an account live on one partition.
* ``rows``: applies deltas to the rows' member sets and publishes every
  changed row to reports.conversions (a tombstone when a row empties).
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from services.aggregate import logic
from shared.app import raw_table, raw_topic
from shared.batching import DeadLetterOnError, Outbox, StateCache, finish_batch
from shared.logging import get_logger
from shared.settings import Settings


def register(app: faust.App, settings: Settings) -> Any:
    log = get_logger()
    results = raw_table(app, settings, "results")
    rows = raw_table(app, settings, "rows")

    @app.agent(raw_topic(app, settings, "conversions.attributed"), name="results")
    async def results_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, "reports.deltas")
        guard = DeadLetterOnError(outbox, log)
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            cache = StateCache(results)
            for event in events:
                async with guard(event):
                    message = event.message
                    if message.value is None:
                        continue  # a compaction tombstone carries no result
                    record = orjson.loads(message.value)
                    last, deltas = logic.on_result(cache.get(message.key, event), record)
                    if last is None:
                        continue
                    for delta in deltas:
                        await outbox.send("reports.deltas", record["ad_account_id"], delta)
                    cache.put(message.key, last, event)
            await finish_batch(outbox, cache)

    @app.agent(raw_topic(app, settings, "reports.deltas"), name="rows")
    async def rows_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, "reports.conversions")
        guard = DeadLetterOnError(outbox, log)
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            cache = StateCache(rows)
            changed: dict[bytes, Any] = {}
            for event in events:
                async with guard(event):
                    delta = orjson.loads(event.message.value)
                    key = delta["row"].encode()
                    row = cache.get(key, event) or {"members": {}, "version": 0}
                    if logic.apply_delta(row["members"], delta):
                        row["version"] += 1
                        cache.put(key, row, event)
                        changed[key] = row
            for key, row in changed.items():
                summary = logic.summarise(key.decode(), row["members"], row["version"])
                await outbox.send("reports.conversions", key, summary)
            await finish_batch(outbox, cache)

    return rows
