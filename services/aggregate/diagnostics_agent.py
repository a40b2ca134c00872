"""Agents of the setup diagnostics (docs/diagnostics.md).

* ``FactsHandler`` (conversions.duplicates, conversions.dlq ->
  diagnostics.facts): one compact fact per input, re-keyed by ad account;
  stateless. A valid conversion's fact comes from ingest, with the
  conversions.valid record (``shared.contract.diagnostic_facts``); a result's
  from attribute's publisher, with the result (``shared.contract.report_deltas``).
* ``BucketsHandler`` (diagnostics.facts -> table ``diagnostics``): counts a
  fact in its ``"{ad_account_id}:{day}"`` bucket, once (see
  ``services.aggregate.diagnostics.fold``).

``register`` only wires them to Faust; they run in-process in unit tests.
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from services.aggregate import diagnostics
from shared.runtime.app import raw_table, raw_topic
from shared.runtime.batching import Outbox, StateCache, process
from shared.runtime.logging import get_logger, message_fields
from shared.runtime.settings import Settings

FACTS = "diagnostics.facts"
#: Not conversions.valid: ingest sends those facts itself (reading the conversions'
#: largest records only to make them cost aggregate one input per conversion).
FACT_INPUTS = ("conversions.duplicates", "conversions.dlq")


class FactsHandler:
    """One input record -> at most one fact on diagnostics.facts (key: ad account)."""

    def __init__(self, settings: Settings, outbox: Outbox, log: Any) -> None:
        self.outbox = outbox
        self.log = log
        self.names = {settings.topic_name(n): n for n in FACT_INPUTS}
        self.raw_topic = settings.topic_name("conversions.raw")

    async def __call__(self, event: Any) -> None:
        message = event.message
        if message.value is None:
            return  # no value: nothing to count
        try:
            fact = self.fact_of(self.names[message.topic], orjson.loads(message.value), message)
        except Exception as exc:  # noqa: BLE001 - see below
            # Not dead-lettered: these inputs passed validation upstream, and a
            # DLQ record would count as one more reject of the pipeline. A
            # record diagnostics cannot read is left out of them, and logged.
            self.log.warning(
                "diagnostics_skipped", error=type(exc).__name__, **message_fields(message)
            )
            return
        if fact is not None:
            await self.outbox.send(FACTS, fact["ad_account_id"], fact)

    def fact_of(self, topic: str, doc: dict[str, Any], message: Any) -> dict[str, Any] | None:
        timestamp_ms = int(message.timestamp * 1000)
        if topic == "conversions.duplicates":
            return diagnostics.fact_of_duplicate(doc, timestamp_ms)
        if doc.get("source_topic") != self.raw_topic:
            return None  # a downstream processing error: its input was counted already
        return diagnostics.fact_of_rejected(doc, timestamp_ms)


class BucketsHandler:
    """One fact against its day bucket and its marker in the ``diagnostics`` table."""

    def __init__(self, settings: Settings, outbox: Outbox, log: Any) -> None:
        self.outbox = outbox
        self.log = log

    async def __call__(self, event: Any, state: StateCache) -> None:
        fact = orjson.loads(event.message.value)
        account, day = fact["ad_account_id"], fact["day"]
        key = diagnostics.bucket_key(account, day).encode()
        marker_key = diagnostics.marker_key(fact).encode()
        current = state.get(key, event)
        bucket, marker, counted = diagnostics.fold(current, state.get(marker_key, event), fact)
        if not counted:
            # Counted already: write both again (see StateCache.rewrite).
            state.rewrite(key, event)
            state.rewrite(marker_key, event)
            return
        state.put(key, bucket, event)
        state.put(marker_key, marker, event)
        if current is None:
            self.expire(event, state, account, diagnostics.expired_day(day))

    def expire(self, event: Any, state: StateCache, account: str, day: str) -> None:
        """Delete a day past every window: its bucket and its markers (a prefix read)."""
        state.put(diagnostics.bucket_key(account, day).encode(), None, event)
        prefix = diagnostics.markers_prefix(account, day).encode()
        for found in state.with_prefix(prefix, event):
            state.put(found, None, event)


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    table = raw_table(app, settings, "diagnostics")

    @app.agent(raw_topic(app, settings, *FACT_INPUTS), name="diagnostics_facts")
    async def facts_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, FACTS)
        handler = FactsHandler(settings, outbox, log)
        within_s = settings.diagnostics_batch_within_s
        await process(stream, settings, outbox, handler, log=log, within_s=within_s)

    @app.agent(raw_topic(app, settings, FACTS), name="diagnostics")
    async def buckets_agent(stream: Any) -> None:
        outbox = Outbox(app, settings)
        handler = BucketsHandler(settings, outbox, log)
        within_s = settings.diagnostics_batch_within_s
        await process(stream, settings, outbox, handler, table, log=log, within_s=within_s)
