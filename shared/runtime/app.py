"""The Faust app factory shared by the five services.

One App per service: its id (``convmesh-<service>``) is the consumer group, the
changelog prefix and the RocksDB folder. Topics and tables come from the
registry; every topic carries raw bytes and is decoded by our own code.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import faust
import rocksdict
from faust.sensors.monitor import Monitor
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event
from faust.types import TP
from mode.utils.objects import cached_property

from shared.kafka.batch_producer import Record, SentBatch, send_many
from shared.kafka.client_config import faust_credentials
from shared.kafka.partitioner import Partitioner
from shared.kafka.registry_access import registry_for
from shared.runtime import metrics
from shared.runtime.consumer import InOrderConsumer
from shared.runtime.errors import ConfigError
from shared.runtime.flow import KeepQueuedFlowControl
from shared.runtime.logging import get_logger
from shared.runtime.memtables import IDLE_CHECK_INTERVAL_S, IdleMemtables, flush_idle
from shared.runtime.rocksdb_memory import (
    SharedMemory,
    SharedMemoryOptions,
    partition_databases,
)
from shared.runtime.settings import Settings
from shared.runtime.stream import FetchBatchStream


def seek_prefix(db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of a RocksDB database whose key starts with ``prefix``:
    a seek to the prefix, then keys in order until one no longer carries it."""
    found = []
    for key, value in db.items(from_key=prefix):
        if not key.startswith(prefix):
            break
        found.append((key, value))
    return found


class AckedTable(faust.Table):  # type: ignore[type-arg]
    """A Table whose changelog records can be awaited.

    Faust acks a batch's input offsets as soon as the agent hands the batch
    back, and its commit flushes the producer in a way that can miss a
    changelog record still in its buffer (seen under load in the kill -9
    test: a committed input whose state never reached the changelog, so the
    restart restored an older state). Agents therefore wait for these records
    (``shared.runtime.pipeline.Pipeline``) before the batch's offsets are acked.
    """

    def changelog_records(self, writes: list[tuple[int, bytes, bytes | None]]) -> list[Record]:
        """A batch's writes as records of this table's changelog, for a caller that sends
        them itself (``shared.runtime.pipeline``, the changelog that leaves with the next
        batch's outputs); ``persist_sent`` then records their offsets."""
        warn_of_large_values(self.name, writes)
        topic = self.changelog_topic.get_topic_name()
        return [(topic, partition, key, value) for partition, key, value in writes]

    async def persist_sent(self, sent: list[SentBatch]) -> None:
        """Record, for recovery, the offsets of this table's changelog batches among ``sent``
        (acked record batches of any topics)."""
        topic = self.changelog_topic.get_topic_name()
        await self._persist_offsets(topic, [batch for batch in sent if batch.topic == topic])

    async def write_batch(self, writes: list[tuple[int, bytes, bytes | None]]) -> Any:
        """A batch's writes (partition, key, value or None to delete): changelog, then store.

        The changelog records leave as one Kafka record batch per partition
        (``shared.kafka.batch_producer``) instead of Faust's FutureMessage and
        callback per record. Returns what to await: the records acknowledged,
        then each partition's persisted offset (Faust's recovery starts after
        it) recorded in its store.
        """
        producer = await self.app.maybe_start_producer()
        sent = await send_many(producer._ensure_producer(), self.changelog_records(writes))
        self.write_store(writes)
        return self.persist_sent(sent)

    def read(self, partition: int, key: bytes) -> bytes | None:
        """The stored value of ``key`` on ``partition``: one RocksDB get.

        Faust's ``table.get`` asks the store whether the key exists and then
        reads it (two gets and several Python layers per key; 4% of
        identity_match's CPU in the bench profile).
        """
        store: Any = self.data
        if not isinstance(store, RocksDBStore):
            return self.get(key)
        value: bytes | None = store._db_for_partition(partition).get(key)
        return value

    def read_prefix(self, partition: int, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """The stored (key, value) pairs of ``partition`` whose key starts with ``prefix``:
        a seek in that partition's database, no scan of the table."""
        store: Any = self.data
        if not isinstance(store, RocksDBStore):
            return [(k, v) for k, v in self.items() if k.startswith(prefix)]
        return seek_prefix(store._db_for_partition(partition), prefix)

    def write_store(self, writes: list[tuple[int, bytes, bytes | None]]) -> None:
        """Write to RocksDB as one write batch per partition.

        Faust writes a table key by key, so a kill -9 in the middle of a batch's
        writes left the local store with some of them: an input whose state
        spans two keys (a counter and the marker that it was counted) then
        found itself "already counted" with the count missing. Here every
        partition's writes of a batch land together or not at all.
        """
        store: Any = self.data
        if not isinstance(store, RocksDBStore):
            raise TypeError("write_store needs a RocksDB store")
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for partition, key, value in writes:
            by_partition.setdefault(partition, []).append((key, value))
        for partition, items in by_partition.items():
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in items:
                if value is None:
                    batch.delete(key)
                    store._key_index.pop(key, None)
                else:
                    batch.put(key, value)
                    store._key_index[key] = partition
            store._db_for_partition(partition).write(batch)

    async def _persist_offsets(self, topic: str, sent: list[SentBatch]) -> None:
        last: dict[int, int] = {}
        for batch in sent:
            offset = await batch.last_offset()
            last[batch.partition] = max(last.get(batch.partition, -1), offset)
        store: Any = self.data
        for partition, offset in last.items():
            store.set_persisted_offset(TP(topic, partition), offset)

    def _new_store_by_url(self, url: Any) -> Any:
        """Faust's store, its databases opened with the worker's shared memory budget."""
        store = super()._new_store_by_url(url)
        memory = getattr(self.app.conf, "convmesh_rocksdb_memory", None)
        if memory is not None and isinstance(store, RocksDBStore):
            store.rocksdb_options = SharedMemoryOptions(memory, wal=self.needs_wal)
        return store

    #: Whether this table's stores need RocksDB's write-ahead log: True unless the
    #: registry says no other table is written with it (``raw_table``).
    needs_wal: bool = True


#: A table value this large is logged: it is on its way to the changelog's record limit.
LARGE_VALUE_BYTES = 1 << 20


def warn_of_large_values(table: str, writes: list[tuple[int, bytes, bytes | None]]) -> None:
    """Log every value of a batch past LARGE_VALUE_BYTES: by table, partition and size,
    never by key (keys of some tables are user ids)."""
    for partition, _key, value in writes:
        if value is not None and len(value) > LARGE_VALUE_BYTES:
            get_logger().warning(
                "large_table_value", table=table, partition=partition, bytes=len(value)
            )


class LeanMonitor(Monitor):
    """Faust's monitor without its per-record statistics.

    Faust calls the monitor four times per record (message in and out, stream
    event in and out) to keep counters and timings that only its own web
    statistics page (off here) shows; convmesh's metrics are its own
    (``shared.runtime.metrics``). What Faust itself reads back is kept: the
    time each partition's stream last took a record (its slow-processing
    warnings), and the offsets tracked outside these calls.
    """

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        self.tp_read_offsets[tp] = offset

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        return None


class ServiceApp(faust.App):
    """Faust's App with flow control that keeps the records of a running flow
    (``shared.runtime.flow``)."""

    @cached_property
    def flow_control(self) -> KeepQueuedFlowControl:
        return KeepQueuedFlowControl(loop=self.loop)


def create_app(
    settings: Settings, *, fetch_wait_ms: int | None = None, wake_on: Sequence[str] = ()
) -> faust.App:
    """Build the Faust App of one service worker. No side effect beyond the object.

    The consumer's fetch wait is ``fetch_wait_ms``, else the settings'. A service
    whose agents read records its other agents send names in ``wake_on`` the topics
    of the conversions' path it reads: after a fetch with records of them, the next
    has no minimum size (``shared.kafka.fetch_pacing``).
    """
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    brokers = ";".join(f"kafka://{host.strip()}" for host in settings.bootstrap.split(","))
    app = ServiceApp(
        settings.app_id,
        Stream=FetchBatchStream,
        broker=brokers,
        broker_credentials=faust_credentials(settings),  # TLS / SASL, like every client
        store="rocksdb://",
        datadir=str(settings.worker_data_dir),
        autodiscover=False,
        web_enabled=True,
        # Faust's built-in web pages, all off: /table/<name>/<key>/ serves raw table
        # rows (user ids), /router/ the key-to-worker map and the cluster's URLs,
        # /graph and the statistics at / the worker's internals. @app.table_route
        # does not need /router: it forwards a request itself, from the assignor's
        # metadata. What stays at / is Faust's bare {"status": "OK"} index.
        debug=False,
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        # Faust lets environment variables (APP_WEB_TABLES_ENABLED, ...) override
        # the arguments here; Settings is the only configuration convmesh reads.
        env={},
        Table=AckedTable,
        Monitor=LeanMonitor,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        consumer_auto_offset_reset="earliest",
        # The fetcher holds up to this much per input partition, and Faust turns
        # all of it into records at once: under a backlog, 16 MiB held the whole
        # backlog in memory (identity_match 277 MB after 900k context records,
        # against 208 MB at 256 KiB), for 13% more full-speed throughput and
        # faster restores (docs/benchmarks.md, "The fetch size and memory").
        consumer_max_fetch_size=settings.consumer_fetch_kb * 1024,
        producer_acks=-1,
        # A table value may grow past 1 MB (topics.yaml, changelog_max_message_bytes).
        producer_max_request_size=max(
            1_048_576, registry_for(settings).changelog_max_message_bytes or 0
        ),
        # Kafka's default placement, with a fast murmur2 and a cache of recent keys.
        producer_partitioner=Partitioner(),
        topic_allow_declare=True,
        topic_replication_factor=1,
        table_standby_replicas=settings.standby_replicas,
        # On a rebalance, finish the batches in flight (their changelog records and
        # offsets) before giving partitions up: otherwise the new owner can recover
        # a partition before the old one's last writes reach the changelog.
        stream_wait_empty=True,
        broker_commit_every=1_000,
        # Faust's 60 s default keeps a killed worker's partitions unassigned for a
        # minute after it is restarted; heartbeats come from a background thread.
        broker_session_timeout=float(settings.session_timeout_s),
        broker_heartbeat_interval=3.0,
        broker_commit_interval=1.0,
    )
    app.conf.convmesh = settings
    app.conf.convmesh_rocksdb_memory = SharedMemory.of_size(
        settings.rocksdb_cache_mb, settings.rocksdb_memtables_mb, wal=settings.rocksdb_wal
    )
    wait = settings.consumer_fetch_wait_ms if fetch_wait_ms is None else fetch_wait_ms
    _use_in_order_consumer(app, settings, wait, wake_on if settings.consumer_wake_on_path else ())
    _heal_stalled_partitions(app)
    _flush_idle_memtables(app)
    _add_health_views(app, settings)
    metrics.install(app, settings)  # its own registry and the /metrics view
    return app


def create_service_app(
    settings: Settings,
    *registrars: Callable[[faust.App, Settings], None],
    fetch_wait_ms: int | None = None,
    wake_on: Sequence[str] = (),
) -> faust.App:
    """A service's App with its agents and views: each registrar adds its part.

    ``fetch_wait_ms`` replaces the settings' fetch wait for a service whose
    inputs are all off the conversions' path; ``wake_on`` is for a service whose
    agents read what its other agents send (``create_app``).
    """
    app = create_app(settings, fetch_wait_ms=fetch_wait_ms, wake_on=wake_on)
    for register in registrars:
        register(app, settings)
    return app


def _use_in_order_consumer(
    app: faust.App, settings: Settings, fetch_wait_ms: int, wake_on: Sequence[str] = ()
) -> None:
    """The app's consumer delivers the records of non-compacted topics in sequence.

    With ``wake_on`` (topics), a fetch after one that brought their records has no
    minimum size, and fetches are paced instead.
    """
    registry = registry_for(settings)
    gapless = frozenset(settings.topic_name(s.name) for s in registry if not s.compacted)
    fields = {
        "gapless_topics": gapless,
        "fetch_min_bytes": settings.consumer_fetch_min_kb * 1024,
        "fetch_max_wait_ms": fetch_wait_ms,
        "fetch_sessions": settings.consumer_fetch_sessions,
        "wake_topics": frozenset(settings.topic_name(t) for t in wake_on),
        "fetch_gap_s": settings.consumer_fetch_gap_ms / 1000 if wake_on else 0.0,
    }
    consumer_class = type("AppConsumer", (InOrderConsumer,), fields)
    # Before the consumer exists (it is created lazily).
    app.transport.Consumer = consumer_class  # type: ignore[misc]


#: How often a worker looks for partitions whose commit a lost delivery holds.
HEAL_INTERVAL_S = 10.0


def _heal_stalled_partitions(app: faust.App) -> None:
    """Every HEAL_INTERVAL_S, read again the partitions a lost delivery stalls, and repeat
    the seeks back that have not landed (InOrderConsumer)."""

    @app.timer(HEAL_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def heal_stalled_partitions() -> None:
        consumer = app._consumer
        if consumer is None or not is_ready(app):
            return  # during a rebalance the partitions are sought again anyway
        heal = getattr(consumer, "heal_stalled", None)
        if heal is not None:
            await heal(time.monotonic())
        reseek = getattr(consumer, "reseek_lost", None)
        if reseek is not None:
            await reseek(time.monotonic())
        heal_lost = getattr(consumer, "heal_lost", None)
        if heal_lost is not None:
            await heal_lost(time.monotonic(), queued_partitions(app))


def _flush_idle_memtables(app: faust.App) -> None:
    """Every IDLE_CHECK_INTERVAL_S, flush the memtables no longer written
    (``shared.runtime.memtables``)."""
    memtables = IdleMemtables()
    log = get_logger(component="stores")

    @app.timer(IDLE_CHECK_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def flush_idle_memtables() -> None:
        flush_idle(memtables, rocksdb_databases(app), log, unlogged_databases(app))


def rocksdb_databases(app: faust.App) -> list[Any]:
    """The open RocksDB database of every table partition of the worker."""
    return [db for table in app.tables.values() for db in partition_databases(table) or ()]


def unlogged_databases(app: faust.App) -> set[int]:
    """The ``id`` of every open database written without the write-ahead log."""
    found: set[int] = set()
    for table in app.tables.values():
        options = getattr(getattr(table, "data", None), "rocksdb_options", None)
        if getattr(options, "wal", True) is False:
            found.update(id(db) for db in partition_databases(table) or ())
    return found


def raw_tables(app: faust.App, settings: Settings, *names: str) -> list[Any]:
    """Tables one agent writes together: they must all keep the write-ahead log
    (``shared.runtime.rocksdb_memory``); a worker whose topics.yaml says otherwise does
    not start."""
    tables = [raw_table(app, settings, name) for name in names]
    refuse_tables_without_wal(tables)
    return tables


def refuse_tables_without_wal(tables: Sequence[Any]) -> None:
    """Tables one agent writes must all keep RocksDB's write-ahead log: their stores
    flush on their own, so without it a kill -9 could keep one table's write of a batch
    and lose another's (``shared.runtime.rocksdb_memory``)."""
    alone = [t.name for t in tables if not getattr(t, "needs_wal", True)]
    if len(tables) > 1 and alone:
        raise ConfigError(
            f"tables {alone} are written by one agent with"
            f" {[t.name for t in tables if getattr(t, 'needs_wal', True)]}, but topics.yaml"
            " gives them a source of their own: declare one source for the tables an"
            " agent writes"
        )


def queued_partitions(app: faust.App) -> set[TP]:
    """The partitions of the records waiting in the app's stream queues."""
    queued: set[TP] = set()
    for channel in list(app.topics._topics):  # type: ignore[attr-defined]
        queue = getattr(channel, "_queue", None)  # not created until first used
        for event in list(getattr(queue, "_queue", ())):
            message = getattr(event, "message", None)
            if message is not None:
                queued.add(message.tp)
    return queued


def raw_topic(app: faust.App, settings: Settings, *names: str) -> Any:
    """A Faust topic (or several, as one channel) of the registry, as raw bytes."""
    registry = registry_for(settings)
    partitions = {registry.topic(n).partitions for n in names}
    if len(partitions) != 1:
        raise ValueError(f"topics {names} are consumed together but differ in partitions")
    return app.topic(
        *(settings.topic_name(n) for n in names),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions.pop(),
        internal=False,
    )


def raw_table(app: faust.App, settings: Settings, table: str) -> Any:
    """A RocksDB table of the registry: raw bytes keys and values."""
    registry = registry_for(settings)
    spec = registry.table(settings.service, table)
    source = registry.topic(spec.source)
    made: Any = app.Table(
        table,
        partitions=source.partitions,
        key_type=bytes,  # bytes means the "raw" codec for both (see Table._serializer_from_type)
        value_type=bytes,
        options={"driver": "rocksdict"},
    )
    # Read when its store is made, at the first use of ``made.data``, not before.
    made.needs_wal = not registry.written_alone(settings.service, table)
    return made


def bind_event(event: Any) -> None:
    """Make ``event`` Faust's current event.

    Faust routes a table read or write to the RocksDB partition and changelog
    partition of the *current* event. Inside a ``take_events`` batch, which
    mixes partitions, this must be set per event before touching a table.
    """
    _current_event.set(weakref.ref(event))


def is_ready(app: faust.App) -> bool:
    """Started, past its first rebalance and table recovery, not rebalancing."""
    consumer_ready = app._consumer is not None and bool(app.consumer.assignment())
    tables: Any = app.tables  # the TableManager: its type stub lacks ``recovery``
    recovered = tables.recovery.completed.is_set() if tables else True
    return bool(app.started and not app.rebalancing and recovered and consumer_ready)


def _add_health_views(app: faust.App, settings: Settings) -> None:
    started_at = time.time()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(
            {
                "service": settings.service,
                "worker": settings.worker,
                "app_id": settings.app_id,
                "status": "ok",
                "uptime_s": round(time.time() - started_at, 1),
            }
        )

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok = is_ready(app)
        body = {
            "service": settings.service,
            "worker": settings.worker,
            "ready": ok,
            "rebalancing": bool(app.rebalancing),
            "assigned_partitions": len(app.consumer.assignment()) if app._consumer else 0,
        }
        return web.json(body, status=200 if ok else 503)
