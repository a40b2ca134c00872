"""Agents of the aggregate service.

* ``results``: per conversion_key, the last result counted; turns a new
  version into ``remove`` (old row) and ``add`` (new row) deltas, keyed by ad
  account so that all rows of an account live on one partition.
* ``rows``: applies deltas to the rows' member sets and publishes every
  changed row to reports.conversions once per batch (a tombstone when a row
  empties).
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from services.aggregate import logic
from shared.contract import versions
from shared.runtime.app import raw_table, raw_topic
from shared.runtime.batching import Outbox, process
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    results = raw_table(app, settings, "results")
    rows = raw_table(app, settings, "rows")

    @app.agent(raw_topic(app, settings, "conversions.attributed"), name="results")
    async def results_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, "reports.deltas")

        async def handle(event: Any, cache: Any) -> None:
            message = event.message
            if message.value is None:
                return  # a compaction tombstone carries no result
            record = orjson.loads(message.value)
            last, deltas = logic.on_result(cache.get(message.key, event), record)
            if last is None:
                cache.rewrite(message.key, event)  # counted already (or older)
                return
            for delta in deltas:
                await outbox.send("reports.deltas", record["ad_account_id"], delta)
            cache.put(message.key, last, event)

        await process(stream, settings, outbox, handle, results, log=log)

    @app.agent(raw_topic(app, settings, "reports.deltas"), name="rows")
    async def rows_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, "reports.conversions")
        changed: dict[bytes, Any] = {}

        async def handle(event: Any, cache: Any) -> None:
            delta = orjson.loads(event.message.value)
            key = delta["row"].encode()
            row = cache.get(key, event) or {"members": {}, "version": 0}
            if logic.apply_delta(row["members"], delta):
                row["version"] = versions.next_stamp(row["version"], versions.now_ms())
                cache.put(key, row, event)
                changed[key] = row
            else:
                cache.rewrite(key, event)  # applied already (or older)

        async def publish_rows(_cache: Any) -> None:
            for key, row in changed.items():
                summary = logic.summarise(key.decode(), row["members"], row["version"])
                await outbox.send("reports.conversions", key, summary)
            changed.clear()

        await process(stream, settings, outbox, handle, rows, log=log, after_batch=publish_rows)
