"""Prometheus metrics of one worker, served on ``/metrics`` (operator token required).

Every App gets its own ``CollectorRegistry`` (``metrics_of(app)``): no
module-global registry, so two apps in one process (tests) never share
counters. The batching loop counts records in and out, dead letters and batch
times; agents add one line where they decide an outcome (a duplicate, a match,
an attribution). Gauges read at scrape time (consumer lag, table sizes, disk
use) come from ``WorkerCollector``. docs/operations.md lists every metric.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.runtime.rocksdb_memory import partition_databases
from shared.runtime.web_auth import operator_page

PREFIX = "convmesh_"
CONTENT_TYPE = "text/plain; version=0.0.4"
#: Batches take milliseconds to a few seconds (a retried batch: up to 30 s).
BATCH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The garbage collector's pauses: young ones take microseconds, full ones up to 100s of ms.
GC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: From the Conversions API to a stage's output: milliseconds to minutes (backlogs).
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_RECEIVED_AT = re.compile(rb'"received_at_ms":\s*(\d+)')


def metric_name(name: str, unit: str = "", *, counter: bool = False) -> str:
    """A Prometheus name under our prefix: ``convmesh_<name>[_<unit>][_total]``.

    Units are base units in plural (``seconds``, ``bytes``); a counter ends in
    ``_total``. Asking twice for a suffix does not add it twice.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"metric name {name!r}: lower case letters, digits and _ only")
    full = name if name.startswith(PREFIX) else PREFIX + name
    if unit and not full.endswith(f"_{unit}") and not full.endswith(f"_{unit}_total"):
        full = f"{full}_{unit}"
    if counter and not full.endswith("_total"):
        full += "_total"
    return full


def received_at_ms(value: Any) -> int | None:
    """The ``received_at_ms`` a record carries (JSON dict or bytes), if any."""
    if isinstance(value, dict):
        found = value.get("received_at_ms")
        return found if isinstance(found, int) else None
    if isinstance(value, bytes):
        match = _RECEIVED_AT.search(value)
        return int(match.group(1)) if match else None
    return None


def observe_many(histogram: Any, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for every ``a`` of ``amounts`` (a labelled child of a
    prometheus_client Histogram): one increment per bucket touched and one of the sum,
    where ``observe`` takes two locks per amount. The bucket of an amount is the first
    whose upper bound is at least the amount, as in ``observe``."""
    if not amounts:
        return
    bounds = histogram._upper_bounds
    per_bucket: dict[int, int] = {}
    for amount in amounts:
        index = bisect_left(bounds, amount)
        per_bucket[index] = per_bucket.get(index, 0) + 1
    for index, count in per_bucket.items():
        histogram._buckets[index].inc(count)
    histogram._sum.inc(sum(amounts))


class Metrics:
    """The metrics of one worker, in the worker's own registry."""

    def __init__(self, service: str = "", worker: int = 0) -> None:
        self.service = service
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry

        def counter(name: str, doc: str, labels: Iterable[str]) -> Counter:
            # prometheus_client appends _total itself; it wants the bare name.
            bare = metric_name(name, counter=True).removesuffix("_total")
            return Counter(bare, doc, list(labels), registry=r)

        self.records_in = counter("records_in", "Records consumed, per topic", ["topic"])
        self.records_out = counter("records_out", "Records produced, per topic", ["topic"])
        self.rejects = counter(
            "rejects", "Records dead-lettered, per reason code", ["reason", "topic"]
        )
        self.duplicates = counter("duplicates", "Conversions found to be duplicates", [])
        self.matches = counter(
            "match_outcomes", "Identity match outcomes, per key type", ["key_type", "outcome"]
        )
        self.attributions = counter(
            "attribution_outcomes", "Attribution outcomes, per touch type", ["touch_type"]
        )
        self.outcomes = counter("outcomes", "Other decided outcomes, per kind", ["outcome"])
        self.batch_seconds = Histogram(
            metric_name("batch_processing", "seconds"),
            "Time to process one batch of records (handlers, sends, state)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            metric_name("end_to_end_latency", "seconds"),
            "From received_at_ms (Conversions API / ingest) to this output, per topic",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.gc_pauses = Histogram(
            metric_name("gc_pause", "seconds"),
            "Pauses of Python's garbage collector, per generation (2: a full collection,"
            " which stalls every agent of the worker)",
            ["generation"],
            buckets=GC_BUCKETS,
            registry=r,
        )

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, kept: these hooks run per record, and
        prometheus_client takes a lock and checks the labels on every call."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # One-line hooks for the agents: where an outcome is decided.
    def duplicate(self) -> None:
        self.duplicates.inc()

    def match(self, key_type: str, outcome: str) -> None:
        self._child(self.matches, key_type or "none", outcome).inc()

    def attribution(self, touch_type: str | None) -> None:
        self._child(self.attributions, touch_type or "none").inc()

    def published_result(self, record: Any) -> None:
        """A conversions.attributed record: its touch type (``none``: not attributed)."""
        if not isinstance(record, dict) or "status" not in record:
            return  # a tombstone or scrub, not an outcome
        touch = record.get("touch") or {}
        self.attribution(touch.get("type"))

    def outcome(self, outcome: str) -> None:
        self._child(self.outcomes, outcome).inc()

    # Hooks of the batching loop.
    def record_in(self, topic: str, count: int = 1) -> None:
        self._child(self.records_in, topic).inc(count)

    def records_out_of_batch(
        self,
        sent: Mapping[str, int],
        received: Mapping[str, Sequence[int]],
        now_ms: int | None = None,
    ) -> None:
        """A batch's outputs: ``sent`` records per topic, and the ``received_at_ms`` of those
        that carry one (latency samples, taken at ``now_ms``: when the batch hands its
        records on). Counted once per batch and topic: per record, the counter's and the
        histogram's locks were 2.8% of the mesh's busy samples."""
        for topic, count in sent.items():
            self._child(self.records_out, topic).inc(count)
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        for topic, stamps in received.items():
            seconds = [max(0, now - stamp) / 1000 for stamp in stamps]
            observe_many(self._child(self.latency, topic), seconds)

    def gc_paused(self, generation: int, seconds: float) -> None:
        self._child(self.gc_pauses, str(generation)).observe(seconds)

    def reject(self, reason: str, topic: str) -> None:
        self._child(self.rejects, reason, topic).inc()

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_of(app: Any) -> Metrics:
    """The app's Metrics, made on first use (so fakes of an app get one too)."""
    found = getattr(app, "convmesh_metrics", None)
    if found is None:
        settings = getattr(getattr(app, "conf", None), "convmesh", None)
        found = Metrics(getattr(settings, "service", ""), getattr(settings, "worker", 0))
        app.convmesh_metrics = found
    return found


def registry_topic(real_name: str, namespace: str) -> str:
    """The registry name of a real Kafka topic name (the namespace prefix removed)."""
    prefix = f"{namespace}." if namespace else ""
    return real_name[len(prefix) :] if prefix and real_name.startswith(prefix) else real_name


def directory_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    total = 0
    for file in path.rglob("*"):
        try:
            if file.is_file():
                total += file.stat().st_size
        except OSError:  # RocksDB removes files while compacting
            continue
    return total


class WorkerCollector(Collector):
    """Gauges read at scrape time: consumer lag, table sizes, RocksDB disk use."""

    def __init__(
        self,
        lag: Callable[[], Iterable[tuple[str, int, int]]],
        table_sizes: Callable[[], Iterable[tuple[str, int]]],
        data_dir: Path,
    ) -> None:
        self._lag = lag
        self._table_sizes = table_sizes
        self._data_dir = data_dir

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            metric_name("consumer_lag", "records"),
            "Records in a partition not yet read by this worker",
            labels=["topic", "partition"],
        )
        for topic, partition, behind in self._lag():
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        keys = GaugeMetricFamily(
            metric_name("table_keys"),
            "Keys in a table on this worker (RocksDB's estimate)",
            labels=["table"],
        )
        for table, size in self._table_sizes():
            keys.add_metric([table], size)
        yield keys
        yield GaugeMetricFamily(
            metric_name("rocksdb_disk", "bytes"),
            "Disk used by this worker's RocksDB tables",
            value=directory_bytes(self._data_dir),
        )


def consumer_lag(app: Any, namespace: str) -> list[tuple[str, int, int]]:
    """(topic, partition, records behind) of the partitions the worker consumes."""
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return []
    result = []
    for tp in sorted(consumer.assignment()):
        if tp.topic.endswith("-changelog") or "__assignor" in tp.topic:
            continue  # changelogs are read only while recovering; the assignor's is Faust's
        highwater = consumer.highwater(tp)
        read = consumer._read_offset.get(tp)
        if highwater is None:
            continue
        position = (read + 1) if read is not None else 0
        result.append(
            (registry_topic(tp.topic, namespace), tp.partition, max(0, highwater - position))
        )
    return result


def table_sizes(app: Any) -> list[tuple[str, int]]:
    """(table, keys) of the app's tables, in the partitions this worker holds."""
    return [(name, table_keys(table)) for name, table in sorted(app.tables.items())]


def table_keys(table: Any) -> int:
    """The keys of one table: RocksDB's own estimate per partition database.

    A scrape (every 2 s from the console) must not walk tables of millions of
    keys; a store that is not RocksDB (no partition databases) is counted.
    """
    dbs = partition_databases(table)
    if dbs is None:
        return sum(1 for _ in table.keys())
    return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0) for db in dbs)


def install(app: Any, settings: Any) -> Metrics:
    """The app's metrics, its scrape-time gauges, and the ``/metrics`` view."""
    metrics = metrics_of(app)
    metrics.add_collector(
        WorkerCollector(
            lambda: consumer_lag(app, settings.namespace),
            lambda: table_sizes(app),
            settings.worker_data_dir,
        )
    )

    @operator_page(app, settings, "/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type=CONTENT_TYPE)

    return metrics
