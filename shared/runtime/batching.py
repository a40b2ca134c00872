"""Helpers that keep agents thin: a per-batch table cache, an outbox and the agents' loop.

Agents take events in batches (``stream.take_events``); a bundled event
(``shared.kafka.bundles``) is handled item by item. Within a batch, each
table key is read and decoded once and written once. A processed batch then
goes to the agent's ``Pipeline`` (``shared.runtime.pipeline``): its outputs
are delivered (acks=all), then its state is written, then its offsets are
acked, in batch order, while the next batch is already being processed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from shared.contract.dead_letters import dead_letter_of_record
from shared.contract.records import Send
from shared.kafka import bundles
from shared.kafka.batch_producer import Record, SentBatch, send_many
from shared.kafka.codec import key_bytes
from shared.kafka.registry_access import registry_for
from shared.runtime import pipeline
from shared.runtime.app import bind_event, refuse_tables_without_wal
from shared.runtime.logging import message_fields
from shared.runtime.metrics import metrics_of, received_at_ms, registry_topic
from shared.runtime.pipeline import (
    PendingWrites,
    Pipeline,
    Writes,
    groups_of,
    hold_offsets,
    is_group,
)
from shared.runtime.settings import Settings
from shared.values import value_class

DLQ = "conversions.dlq"


class StateCache:
    """Read-through, write-back cache of a JSON-valued raw table for one batch.

    Reads see the batch's own writes, then those of earlier batches still in
    flight (``pending``), then the store.
    """

    def __init__(self, table: Any, pending: PendingWrites | None = None) -> None:
        self.table = table
        self.pending = pending
        self._values: dict[bytes, Any] = {}
        self._events: dict[bytes, Any] = {}
        self._dirty: dict[bytes, None] = {}  # insertion-ordered
        self._dirty_groups: dict[bytes, dict[bytes, None]] = {}  # see pipeline.groups_of
        self._always: set[bytes] = set()  # tombstones written even over no stored value

    def get(self, key: bytes, event: Any) -> Any:
        if key in self._values:
            return self._values[key]
        raw = self._stored(key, event)
        value = orjson.loads(raw) if raw is not None else None
        self._values[key] = value
        self._events[key] = event
        return value

    def _stored(self, key: bytes, event: Any) -> bytes | None:
        """The table's value of ``key`` in the partition of ``event`` (batches in flight first)."""
        if self.pending is not None:
            found, value = self.pending.lookup(event.message.partition, key)
            if found:
                return value
        read = getattr(self.table, "read", None)
        if read is not None:
            stored: bytes | None = read(event.message.partition, key)
            return stored
        bind_event(event)  # a table without partition reads (a test double)
        stored = self.table.get(key)
        return stored

    def with_prefix(self, prefix: bytes, event: Any) -> dict[bytes, Any]:
        """Every key starting with ``prefix`` in the partition of ``event`` and its value,
        as this batch sees it: the store's, then the batch's own staged writes."""
        read_prefix = getattr(self.table, "read_prefix", None)
        if read_prefix is not None:
            stored = read_prefix(event.message.partition, prefix)
        else:  # a table without partitions (a test double)
            stored = [(k, v) for k, v in self.table.items() if k.startswith(prefix)]
        found = {key: orjson.loads(raw) for key, raw in stored}
        if self.pending is not None:
            for key, raw in self.pending.with_prefix(event.message.partition, prefix):
                found[key] = orjson.loads(raw) if raw is not None else None
        # Only the batch's own writes: a value it merely read is the store's or pending's.
        staged = self._dirty_groups.get(prefix, {}) if is_group(prefix) else self._dirty
        for key in staged:
            if key.startswith(prefix) and self._events[key].message.partition == (
                event.message.partition
            ):
                found[key] = self._values[key]
        return {key: value for key, value in found.items() if value is not None}

    def put(self, key: bytes, value: Any, event: Any, *, always: bool = False) -> None:
        """Stage a new value (None deletes the key), handed on by take_writes().

        ``always``: a tombstone goes to the changelog even when the store has no
        value. A deletion's redelivery may find the store already without the
        key (kept through a kill -9) while the changelog still has it; left out,
        a worker rebuilding the partition from the changelog would get it back.
        """
        if always:
            self._always.add(key)
        self._values[key] = value
        self._events[key] = event
        self._dirty[key] = None
        for group in groups_of(key):
            self._dirty_groups.setdefault(group, {})[key] = None

    def staged(self, key: bytes) -> bool:
        """Whether this batch has put ``key`` (a write not yet taken)."""
        return key in self._dirty

    def staged_value(self, key: bytes) -> Any:
        """The value this batch has put for ``key`` (KeyError if it put none)."""
        if key not in self._dirty:
            raise KeyError(key)
        return self._values[key]

    def rewrite(self, key: bytes, event: Any) -> None:
        """Write the key's current value again: for an input found already applied.

        A redelivered input that finds its effect in the state may be meeting a
        write the local store kept through a kill -9 but whose changelog record
        never left. Writing the value again puts it in the changelog, so that a
        worker rebuilding this partition from the changelog later has it too.
        """
        value = self.get(key, event)
        if value is not None:
            self.put(key, value, event)

    def take_writes(self) -> Writes:
        """The staged values as writes (partition, key, value or None), in staging order.

        The cache is empty afterwards. A delete of a key that does not exist is
        left out (no tombstone).
        """
        writes: Writes = []
        for key in self._dirty:
            # The partition (store and changelog) is that of the event the key came with.
            event = self._events[key]
            value = self._values[key]
            if value is None and key not in self._always and self._stored(key, event) is None:
                continue
            raw = None if value is None else orjson.dumps(value)
            writes.append((event.message.partition, key, raw))
        self._dirty.clear()
        self._dirty_groups.clear()
        self._always.clear()
        self._values.clear()
        self._events.clear()
        return writes


class Outbox:
    """Sends to registry topics: staged during a batch, handed to the producer by ``ship()``.

    Records are staged during a batch and leave at ``ship()`` as one Kafka
    record batch per topic partition (``shared.kafka.batch_producer``),
    straight through the app's aiokafka producer: Faust's ``topic.send`` wraps
    each message in a FutureMessage with sensors and several coroutine layers,
    and aiokafka's own ``send`` pays a future and an accumulator append per
    record (docs/benchmarks.md, profiles).
    """

    def __init__(self, app: Any, settings: Settings, *names: str) -> None:
        names = tuple(dict.fromkeys((*names, DLQ)))  # every agent may dead-letter
        registry = registry_for(settings)
        for name in names:
            registry.topic(name)  # fail at start for a topic topics.yaml does not declare
        self._app = app
        self._names = {name: settings.topic_name(name) for name in names}
        self._bundled = frozenset(
            real
            for name, real in self._names.items()
            if settings.bundle_records and registry.topic(name).bundled
        )
        self._producer: Any = None
        self._staged: list[Record] = []
        self.sent: dict[str, int] = dict.fromkeys(names, 0)
        self.metrics = metrics_of(app)
        # The staged records' metrics, counted once per batch (take_staged).
        self._staged_counts: dict[str, int] = {}
        self._staged_received: dict[str, list[int]] = {}
        self._staged_rejects: list[tuple[str, str]] = []  # (reason, source topic)
        self._namespace = settings.namespace

    async def send(self, topic: str, key: str | bytes | None, value: Any) -> None:
        """Stage one record; it leaves with the batch's others at ``ship()``."""
        payload = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
        self._staged.append((self._names[topic], None, key_bytes(key), payload))
        self.sent[topic] += 1
        self._staged_counts[topic] = self._staged_counts.get(topic, 0) + 1
        received = received_at_ms(value)
        if received is not None:
            self._staged_received.setdefault(topic, []).append(received)
        if topic == DLQ:
            record = orjson.loads(payload) if payload is not None else {}
            source = registry_topic(str(record.get("source_topic")), self._namespace)
            self._staged_rejects.append((str(record.get("reason")), source))

    async def send_all(self, sends: Iterable[Send]) -> None:
        """Send what a rule returned, in order."""
        for send in sends:
            await self.send(send.topic, send.key, send.value)

    async def dead_letter(
        self, reason: str, text: str, message: Any, log: Any, *, user_keyed: bool = False
    ) -> None:
        """Log and dead-letter one input (conversions.dlq, contract shape).

        ``raw`` is redacted by the contract's one builder. The DLQ key is left
        empty for user-keyed topics: user ids leave the pipeline only as
        pseudonyms.
        """
        log.warning("rejected", reason=reason, **message_fields(message, user_keyed=user_keyed))
        record = dead_letter_of_record(
            reason,
            text,
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            raw=message.value,
        )
        await self.send(DLQ, None if user_keyed else message.key, record)

    def forget_pending(self) -> None:
        """Drop the sends of a failed batch: it is run again and sends them anew."""
        self._staged = []
        self._staged_counts = {}
        self._staged_received = {}
        self._staged_rejects = []

    def take_staged(self) -> list[Record]:
        """The records staged since the last call, in order; the outbox is empty afterwards.
        They count as sent (records out, latency, rejects) from here: a failed batch's
        sends (``forget_pending``) never do."""
        staged, self._staged = self._staged, []
        if self._staged_counts:
            self.metrics.records_out_of_batch(self._staged_counts, self._staged_received)
            self._staged_counts, self._staged_received = {}, {}
        for reason, source in self._staged_rejects:
            self.metrics.reject(reason, source)
        self._staged_rejects = []
        return staged

    async def ship(self, records: list[Record]) -> list[Awaitable[Any]]:
        """Hand ``records`` to the producer; what to await until the broker has them all."""
        if not records:
            return []
        producer = await self._aiokafka_producer()
        double = getattr(producer, "send_many", None)  # the harness's producer
        if double is not None:
            acks: list[Awaitable[Any]] = await double(records)
            return acks
        return [sent.future for sent in await send_many(producer, records, self._bundled)]

    async def ship_with_changelog(
        self, records: list[Record], changelog: list[Record]
    ) -> list[SentBatch]:
        """Hand an earlier batch's ``changelog`` records and this batch's ``records`` to the
        producer in one call: queued together, they leave in one produce request."""
        producer = await self._aiokafka_producer()
        return await send_many(producer, [*changelog, *records], self._bundled)

    async def _aiokafka_producer(self) -> Any:
        if self._producer is None:
            producer = await self._app.maybe_start_producer()
            # Faust's aiokafka driver wraps an AIOKafkaProducer; a test double may not.
            ensure = getattr(producer, "_ensure_producer", None)
            self._producer = ensure() if ensure is not None else producer
        return self._producer


class DeadLetterOnError:
    """The failure policy of an agent: a message that raises is dead-lettered.

    ``async with guard(event):`` around one message's processing. Any exception
    (a record no validation anticipated, or a bug) sends the message to
    conversions.dlq with reason ``processing_error`` and the agent goes on with
    the next one, instead of crashing and re-reading the same record forever.
    """

    def __init__(self, outbox: Outbox, log: Any, *, user_keyed: bool = False) -> None:
        self._outbox = outbox
        self._log = log
        self._user_keyed = user_keyed
        self._event: Any = None

    def __call__(self, event: Any) -> DeadLetterOnError:
        self._event = event
        return self

    async def __aenter__(self) -> DeadLetterOnError:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        message = self._event.message
        fields = message_fields(message, user_keyed=self._user_keyed)
        self._log.error("processing_error", error=type(exc).__name__, **fields)
        text = f"{type(exc).__name__} while processing the record"
        await self._outbox.dead_letter(
            "processing_error", text, message, self._log, user_keyed=self._user_keyed
        )
        return True


@value_class(frozen=True, slots=True)
class ItemMessage:
    """One item of a bundle, as the message it stands for: the bundle's place, its own key
    and value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


@value_class(frozen=True, slots=True)
class ItemEvent:
    """What a handler gets for one item of a bundle (handlers read only ``message``)."""

    message: ItemMessage


def items_of(event: Any) -> list[Any]:
    """The records one event carries: itself, or the items of a bundle (``shared.kafka.bundles``).

    Items share the bundle's partition, so their state and changelog writes go
    where the bundle's would; the bundle's offset is acked once all are handled.
    """
    message = event.message
    if not bundles.is_bundle(message.value):
        return [event]
    return [
        ItemEvent(
            ItemMessage(
                message.topic, message.partition, message.offset, key, value, message.timestamp
            )
        )
        for key, value in bundles.unpack(message.value)
    ]


Handler = Callable[..., Awaitable[None]]


async def process(
    stream: Any,
    settings: Settings,
    outbox: Outbox,
    handle: Handler,
    *tables: Any,
    log: Any,
    user_keyed: bool = False,
    after_batch: Callable[..., Awaitable[None]] | None = None,
    within_s: float | None = None,
) -> None:
    """The loop of every agent.

    Takes of events (``take_events``), cut into batches of at most
    ``settings.batch_size`` records (a bundle counts its items);
    ``handle(record, *caches)`` once per record (an event, or an item of a
    bundle) under the failure policy; then ``after_batch(*caches)`` if given.
    A take ends with the fetch its records came in (``shared.runtime.stream``),
    at the latest after the batch window.
    The processed batch goes to the agent's ``Pipeline``: outputs, then state,
    then offsets, in batch order, while the next batch is processed
    (``settings.batch_pipeline`` batches at most). A batch whose processing
    fails as a whole is run again after a pause; one whose sends fail is sent
    again: never skipped, so nothing is lost. ``within_s`` replaces the batch
    window of the settings (agents off the conversions' path wait longer).
    """
    # raw_tables refuses these when the worker is built; this catches tables made one
    # by one and given to one agent.
    refuse_tables_without_wal(tables)
    guard = DeadLetterOnError(outbox, log, user_keyed=user_keyed)
    flight = Pipeline(
        tables,
        outbox.ship,
        log,
        settings.batch_pipeline,
        ship_with_changelog=outbox.ship_with_changelog,
        changelog_wait_s=settings.changelog_wait_s,
        changelog_hold_s=settings.changelog_hold_s,
        changelog_hold_bytes=settings.changelog_hold_kb * 1024,
    )
    processed: list[Writes] = []
    arrived: Counter[str] = Counter()  # records in per topic, a bundle's items each

    async def run(events: Any) -> None:
        caches = [StateCache(t, p) for t, p in zip(tables, flight.pending, strict=True)]
        arrived.clear()
        for event in events:
            items: list[Any] = []
            async with guard(event):  # a bundle cut short is dead-lettered whole
                items = items_of(event)
            arrived[event.message.topic] += len(items) or 1
            for item in items:
                async with guard(item):
                    await handle(item, *caches)
        if after_batch is not None:
            await after_batch(*caches)
        processed[:] = [cache.take_writes() for cache in caches]

    try:
        window = settings.batch_within_s if within_s is None else within_s
        # A window of the agent's own is a wish for larger batches: no end per fetch.
        per_fetch = settings.batch_per_fetch and within_s is None
        take = stream.take_events(
            settings.batch_size, window, per_fetch=per_fetch, gap_s=settings.batch_gap_s
        )
        async for taken in take:
            chunks = chunks_by_items(taken, settings.batch_size)
            for number, events in enumerate(chunks):
                started = time.perf_counter()
                try:
                    await until_done(run, events, outbox, log)
                    for topic, count in arrived.items():
                        outbox.metrics.record_in(registry_topic(topic, settings.namespace), count)
                    await flight.submit(events, outbox.take_staged(), list(processed))
                except BaseException:
                    hold_offsets([event for later in chunks[number:] for event in later])
                    raise
                outbox.metrics.batch_seconds.observe(time.perf_counter() - started)
        await flight.drain()
    except BaseException:
        flight.abandon()
        raise


def chunks_by_items(events: list[Any], limit: int) -> list[list[Any]]:
    """``events`` in order, cut into processing batches of at most ``limit`` records.

    A take of ``CONVMESH_BATCH_SIZE`` events may hold as many bundles, each of
    hundreds of records: processed as one batch, its decoded state held the
    whole workload of a full-speed push at once (identity_match at 714 MB RSS).
    A bundle larger than ``limit`` on its own is a batch of its own.
    """
    chunks: list[list[Any]] = []
    chunk: list[Any] = []
    size = 0
    for event in events:
        records = bundles.count(event.message.value)
        if chunk and size + records > limit:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(event)
        size += records
    if chunk:
        chunks.append(chunk)
    return chunks


async def until_done(
    run: Callable[[Any], Awaitable[None]], events: Any, outbox: Outbox, log: Any
) -> None:
    """Process one batch until it succeeds, pausing longer after each failure.

    Processing again is safe: the failed attempt's staged sends and state are
    dropped (nothing of it has left), and every handler treats an input whose
    effect is already in its state as a redelivery.
    """
    await pipeline.retry(
        log, "batch_failed", len(events), lambda: run(events), on_failure=outbox.forget_pending
    )


__all__ = [
    "DLQ",
    "DeadLetterOnError",
    "ItemEvent",
    "Outbox",
    "StateCache",
    "chunks_by_items",
    "hold_offsets",
    "items_of",
    "process",
]
