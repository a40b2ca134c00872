"""The ingest agent: conversions.raw -> conversions.valid and diagnostics.facts | conversions.dlq.

``IngestHandler`` is the agent's per-record step: the pure rule
``services.ingest.rules.process_raw`` (never raises) decides, the handler counts,
logs a reject and sends the outcome's record. ``register`` only wires it to Faust
through the house loop (``shared.runtime.batching.process``), so the step runs
in-process in unit tests (``tests/support/harness.py``).

Valid messages go to conversions.valid keyed by conversion_key, each followed by
its setup-diagnostics fact on diagnostics.facts (keyed by ad account: aggregate
counts it without reading conversions.valid), rejects to conversions.dlq keyed
by ad_account_id (or None). Sends are queued in input order
(the producer keeps per-partition order, so the events of one conversion_key reach
conversions.valid in input order); a batch's offsets are acked only once the broker
has all its sends, and a batch that fails is run again (at-least-once: a repeated
record carries the same raw_ref, which dedupe recognises).
"""

from __future__ import annotations

from typing import Any

import faust

from services.ingest.rules import REDACTED, Rejected, Valid, process_raw
from services.ingest.stats import IngestStats, register_stats_view
from shared.runtime.app import raw_topic
from shared.runtime.batching import Outbox, process
from shared.runtime.logging import get_logger, message_fields
from shared.runtime.settings import Settings

OUTPUTS = ("conversions.valid", "diagnostics.facts", "conversions.dlq")


class IngestHandler:
    """One conversions.raw record: decided by the rule, counted, sent."""

    def __init__(self, settings: Settings, outbox: Outbox, log: Any, stats: IngestStats) -> None:
        self.outbox = outbox
        self.log = log
        self.stats = stats
        self.max_bytes = settings.max_record_bytes
        self.identifier_key = settings.active_identifier_key

    async def __call__(self, event: Any) -> None:
        message = event.message
        timestamp = message.timestamp
        outcome = process_raw(
            message.value,
            message.key,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=int(timestamp * 1000) if timestamp else None,
            max_bytes=self.max_bytes,
            identifier_key=self.identifier_key,
        )
        if type(outcome) is Valid:
            self.stats.count_valid(outcome.source)
        else:
            assert isinstance(outcome, Rejected)
            self.stats.count_rejected(outcome.source, outcome.reason)
            self._log_rejected(message, outcome)
        # Both built before either is staged: a fact that failed after its conversion was
        # staged would dead-letter an input already sent as valid (counted twice).
        sends = [outcome.send, outcome.fact] if type(outcome) is Valid else [outcome.send]
        await self.outbox.send_all(sends)

    async def batch_done(self) -> None:
        self.stats.batches += 1

    def _log_rejected(self, message: Any, outcome: Rejected) -> None:
        fields = message_fields(message)
        # The raw key may be anything a producer chose: log it only when it is
        # the ad account id that the record was attributed to.
        account = outcome.record["ad_account_id"]
        if fields["key"] is not None and fields["key"] != account:
            fields["key"] = REDACTED
        self.log.warning(
            "ingest_rejected",
            reason=outcome.reason,
            source=outcome.source,
            ad_account_id=account,
            **fields,
        )


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger(component="ingest-agent")
    stats = IngestStats()
    register_stats_view(app, settings, stats)
    app.conf.convmesh_ingest_stats = stats

    @app.agent(raw_topic(app, settings, "conversions.raw"), name="ingest-main")
    async def main(stream: Any) -> None:
        outbox = Outbox(app, settings, *OUTPUTS)
        handler = IngestHandler(settings, outbox, log, stats)
        # user_keyed: should the failure policy ever dead-letter a record, its key
        # (whatever a producer chose, maybe an email) is neither logged nor reused.
        await process(
            stream,
            settings,
            outbox,
            handler,
            log=log,
            user_keyed=True,
            after_batch=handler.batch_done,
        )
