"""Agents of the aggregate service.

* ``ResultsHandler`` (conversions.attributed -> ``results``): the last result
  counted per conversion_key; a new version becomes deltas on reports.deltas.
* ``RowsHandler`` (reports.deltas -> ``rows``): applies deltas to the rows'
  members and publishes every changed row to reports.conversions once per
  batch (a tombstone when a row empties).

The handlers are the agents' per-record steps; ``register`` only wires them
to Faust, so they run in-process in unit tests (``tests/support/harness.py``).
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from services.aggregate import rules, state
from shared.contract import versions
from shared.runtime.app import raw_table, raw_topic
from shared.runtime.batching import Outbox, StateCache, process
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

RESULTS_OUTPUTS = ("reports.deltas",)
ROWS_OUTPUTS = ("reports.conversions",)


class ResultsHandler:
    """One conversions.attributed record against the ``results`` table."""

    def __init__(self, settings: Settings, outbox: Outbox, log: Any) -> None:
        self.settings = settings
        self.outbox = outbox
        self.log = log

    async def __call__(self, event: Any, results: StateCache) -> None:
        message = event.message
        if message.value is None:
            return  # a compaction tombstone carries no result
        record = orjson.loads(message.value)
        last = state.decode_counted(results.get(message.key, event))
        counted, sends = rules.on_result(last, record)
        if counted is None:
            results.rewrite(message.key, event)  # counted already (or older)
            return
        await self.outbox.send_all(sends)
        results.put(message.key, state.encode_counted(counted), event)


class RowsHandler:
    """One reports.deltas record against the ``rows`` table.

    Changed rows are published by ``publish_changed`` after the batch, so a
    row touched by many deltas of one batch is published once.
    """

    def __init__(self, settings: Settings, outbox: Outbox, log: Any) -> None:
        self.settings = settings
        self.outbox = outbox
        self.log = log
        self.changed: dict[str, state.Row] = {}

    async def __call__(self, event: Any, rows: StateCache) -> None:
        delta = orjson.loads(event.message.value)
        key = delta["row"]
        row = state.decode_row(rows.get(key.encode(), event))
        if rules.on_delta(row, delta, versions.now_ms()):
            rows.put(key.encode(), state.encode_row(row), event)
            self.changed[key] = row
        else:
            rows.rewrite(key.encode(), event)  # applied already (or older)

    async def publish_changed(self, *_caches: StateCache) -> None:
        changed, self.changed = self.changed, {}
        await self.outbox.send_all(rules.publish_row(key, row) for key, row in changed.items())


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    results = raw_table(app, settings, "results")
    rows = raw_table(app, settings, "rows")

    @app.agent(raw_topic(app, settings, "conversions.attributed"), name="results")
    async def results_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, *RESULTS_OUTPUTS)
        handler = ResultsHandler(settings, outbox, log)
        await process(stream, settings, outbox, handler, results, log=log)

    @app.agent(raw_topic(app, settings, "reports.deltas"), name="rows")
    async def rows_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, *ROWS_OUTPUTS)
        handler = RowsHandler(settings, outbox, log)
        await process(
            stream, settings, outbox, handler, rows, log=log, after_batch=handler.publish_changed
        )
