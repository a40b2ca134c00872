"""The ingest agent: conversions.raw -> conversions.valid | conversions.dlq.

Batches come from ``stream.take_events``; every record is decoded and checked by
the pure ``services.ingest.logic.process_raw`` (never raises). Valid messages go
to conversions.valid keyed by conversion_key, rejects to conversions.dlq keyed by
ad_account_id (or None). Sends are queued in input order without waiting for each
acknowledgement (the producer keeps per-partition order, so the events of one
conversion_key reach conversions.valid in input order); the batch waits for all
acknowledgements before it ends, and only then does take_events ack its offsets;
a batch that does not complete (error, cancellation) never has its offsets
committed (``hold_offsets``).
A send that fails is retried (with everything queued after it, in order) until it
succeeds: at-least-once, redeliveries carry the same raw_ref for dedupe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust

from services.ingest.logic import REDACTED, Rejected, Valid, process_raw
from services.ingest.stats import IngestStats, register_stats_view
from shared.runtime.app import raw_topic
from shared.runtime.batching import hold_offsets
from shared.runtime.logging import get_logger, message_fields
from shared.runtime.settings import Settings

log = get_logger(component="ingest-agent")

RETRY_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)


def register(app: faust.App, settings: Settings) -> None:
    source = raw_topic(app, settings, "conversions.raw")
    valid_topic = settings.topic_name("conversions.valid")
    dlq_topic = settings.topic_name("conversions.dlq")
    stats = IngestStats()
    register_stats_view(app, stats)
    app.conf.convmesh_ingest_stats = stats  # type: ignore[attr-defined]

    @app.agent(source, name="ingest-main")
    async def main(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_size, settings.batch_within_s):
            await process_batch(
                batch, settings, stats, valid_topic, dlq_topic, app.maybe_start_producer
            )


async def process_batch(
    batch: Sequence[Any],
    settings: Settings,
    stats: IngestStats,
    valid_topic: str,
    dlq_topic: str,
    get_producer: Callable[[], Awaitable[Any]],
) -> None:
    """Route and publish one batch; if that does not complete, hold its offsets back."""
    try:
        sends = route_batch(batch, settings, stats, valid_topic, dlq_topic)
        await publish(await get_producer(), sends)
    except BaseException:
        hold_offsets(batch)
        raise
    stats.batches += 1


Send = tuple[str, bytes | None, bytes]


def route_batch(
    batch: Sequence[Any], settings: Settings, stats: IngestStats, valid_topic: str, dlq_topic: str
) -> list[Send]:
    """The sends of one batch, in input order: (real topic name, key, value)."""
    sends: list[Send] = []
    max_bytes = settings.max_record_bytes
    for event in batch:
        message = event.message
        timestamp = message.timestamp
        outcome = process_raw(
            message.value,
            message.key,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=int(timestamp * 1000) if timestamp else None,
            max_bytes=max_bytes,
            ip_ua_key=settings.active_ip_ua_key,
        )
        if type(outcome) is Valid:
            stats.count_valid(outcome.source)
            sends.append((valid_topic, outcome.key, outcome.value))
        else:
            assert isinstance(outcome, Rejected)
            stats.count_rejected(outcome.source, outcome.reason)
            sends.append((dlq_topic, outcome.key, outcome.value))
            fields = message_fields(message)
            # The raw key may be anything a producer chose: log it only when it is
            # the ad account id that the record was attributed to.
            account = outcome.record["ad_account_id"]
            if fields["key"] is not None and fields["key"] != account:
                fields["key"] = REDACTED
            log.warning(
                "ingest_rejected",
                reason=outcome.reason,
                source=outcome.source,
                ad_account_id=account,
                **fields,
            )
    return sends


async def publish(producer: Any, sends: list[Send]) -> None:
    """Queue every send in order, then wait for all acks; retry from the first failure.

    Sends go straight to the Faust producer (the aiokafka producer underneath):
    ``topic.send`` wraps every message in a FutureMessage with sensors and several
    coroutine layers, which cost more than validating the event.
    """
    start = 0
    attempt = 0
    while start < len(sends):
        futures: list[Any] = []
        queued_error: BaseException | None = None
        for topic, key, value in sends[start:]:
            try:
                futures.append(await producer.send(topic, key, value, None, None, None))
            except Exception as exc:  # noqa: BLE001 - retried below
                queued_error = exc
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = next(
            (i for i, r in enumerate(results) if isinstance(r, BaseException)),
            len(results) if queued_error is not None else None,
        )
        if failed is None:
            return
        error = results[failed] if failed < len(results) else queued_error
        delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
        log.error(
            "ingest_send_failed",
            error=type(error).__name__,
            detail=str(error)[:200],
            pending=len(sends) - start - failed,
            retry_in_s=delay,
        )
        start += failed
        attempt += 1
        await asyncio.sleep(delay)
