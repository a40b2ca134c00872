"""The topic registry: topics.yaml turned into typed, validated objects.

Every topic name, partition count, cleanup policy and retention used by the
code comes from here, so topics.yaml stays the one source of truth.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from shared.kafka.errors import TopicRegistryError

KINDS = frozenset({"input", "output", "internal", "dlq", "changelog", "framework"})
#: Kinds whose topics are named after a service's app id (not namespaced separately).
APP_SCOPED_KINDS = frozenset({"changelog", "framework"})
CLEANUPS = frozenset({"delete", "compact", "compact,delete"})
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_retention(raw: Any) -> int:
    """A retention in milliseconds; -1 means forever (Kafka's own convention)."""
    if raw in ("forever", -1, "-1"):
        return -1
    match = _DURATION.match(str(raw).strip())
    if not match:
        raise TopicRegistryError(f"retention {raw!r} is not like 7d, 12h, 30m or 'forever'")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One declared topic (its registry name, before any namespace)."""

    name: str
    kind: str
    partitions: int
    replication_factor: int
    cleanup: str
    retention_ms: int
    key: str
    value: str
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    #: A producer batch's records of one partition travel as one bundle record
    #: (shared.kafka.bundles).
    bundled: bool = False
    #: The topic's ``max.message.bytes`` when it is not the broker's default.
    max_message_bytes: int | None = None

    @property
    def compacted(self) -> bool:
        return "compact" in self.cleanup

    def kafka_config(self) -> dict[str, str]:
        """Topic-level configs to create or compare on the broker."""
        config = {"cleanup.policy": self.cleanup}
        if not self.compacted or "delete" in self.cleanup:
            config["retention.ms"] = str(self.retention_ms)
        if self.max_message_bytes is not None:
            config["max.message.bytes"] = str(self.max_message_bytes)
        return config


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A RocksDB table of one service; its changelog follows its source topic."""

    service: str
    table: str
    source: str
    key: str
    value: str

    def changelog_name(self, app_id: str) -> str:
        return f"{app_id}-{self.table}-changelog"


@dataclass(frozen=True, slots=True)
class Registry:
    topics: Mapping[str, TopicSpec]
    tables: Mapping[str, TableSpec]
    #: Topics every service app has once, named "{app_id}-{name}" (Faust's own).
    service_topics: Mapping[str, TopicSpec] = field(default_factory=dict)
    #: Every changelog's ``max.message.bytes`` (None: the broker's default, 1 MB).
    changelog_max_message_bytes: int | None = None

    def service_topic_specs(self, app_id: str) -> list[TopicSpec]:
        return [replace(t, name=f"{app_id}-{t.name}") for t in self.service_topics.values()]

    def topic(self, name: str) -> TopicSpec:
        try:
            return self.topics[name]
        except KeyError:
            raise TopicRegistryError(f"topic {name!r} is not declared in topics.yaml") from None

    def table(self, service: str, table: str) -> TableSpec:
        try:
            return self.tables[f"{service}.{table}"]
        except KeyError:
            raise TopicRegistryError(
                f"table {service}.{table} is not declared in topics.yaml"
            ) from None

    def tables_of(self, service: str) -> list[TableSpec]:
        return [t for t in self.tables.values() if t.service == service]

    def written_alone(self, service: str, table: str) -> bool:
        """Whether no other table of ``service`` follows the same source topic: one agent
        writes several tables of one input, each co-partitioned with it, so tables that
        share a source may be written by one batch (``shared.runtime.rocksdb_memory``)."""
        source = self.table(service, table).source
        return [t.source for t in self.tables_of(service)].count(source) == 1

    def changelog_spec(self, spec: TableSpec, app_id: str) -> TopicSpec:
        source = self.topic(spec.source)
        return TopicSpec(
            name=spec.changelog_name(app_id),
            kind="changelog",
            partitions=source.partitions,
            replication_factor=source.replication_factor,
            cleanup="compact",
            retention_ms=-1,
            key=spec.key,
            value=spec.value,
            producers=(spec.service,),
            consumers=(spec.service,),
            max_message_bytes=self.changelog_max_message_bytes,
        )

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self.topics.values())


def _tuple(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    return tuple(str(x) for x in raw)


def real_name(spec: TopicSpec, namespace_of: Any) -> str:
    """The Kafka name of a spec: app-scoped names are complete, others get the namespace."""
    return spec.name if spec.kind in APP_SCOPED_KINDS else namespace_of(spec.name)


def parse_registry(doc: Mapping[str, Any]) -> Registry:
    """Validate a parsed topics.yaml document and build the registry."""
    if not isinstance(doc, Mapping) or "topics" not in doc:
        raise TopicRegistryError("topics.yaml must have a 'topics' mapping")
    defaults = doc.get("defaults") or {}
    topics = {
        name: _parse_topic(name, raw, defaults) for name, raw in (doc.get("topics") or {}).items()
    }
    service_topics = {
        name: _parse_topic(name, raw, defaults)
        for name, raw in (doc.get("per_service_topics") or {}).items()
    }
    tables: dict[str, TableSpec] = {}
    for full, raw in (doc.get("tables") or {}).items():
        service, _, table = full.partition(".")
        if not table or raw.get("service") != service:
            raise TopicRegistryError(f"table {full}: must be '<service>.<table>' of its service")
        if raw.get("source") not in topics:
            raise TopicRegistryError(f"table {full}: source {raw.get('source')!r} is not a topic")
        tables[full] = TableSpec(
            service=service,
            table=table,
            source=raw["source"],
            key=str(raw.get("key", "")),
            value=str(raw.get("value", "")),
        )
    changelog_max = defaults.get("changelog_max_message_bytes")
    if changelog_max is not None and int(changelog_max) < 1_048_588:
        raise TopicRegistryError("defaults.changelog_max_message_bytes: at least 1048588")
    return Registry(
        topics=topics,
        tables=tables,
        service_topics=service_topics,
        changelog_max_message_bytes=None if changelog_max is None else int(changelog_max),
    )


def _parse_topic(name: str, raw: Any, defaults: Mapping[str, Any]) -> TopicSpec:
    if not isinstance(raw, Mapping):
        raise TopicRegistryError(f"topic {name}: expected a mapping")
    for required in ("kind", "cleanup", "retention", "key", "value"):
        if required not in raw:
            raise TopicRegistryError(f"topic {name}: '{required}' is missing")
    kind, cleanup = raw["kind"], raw["cleanup"]
    if kind not in KINDS:
        raise TopicRegistryError(f"topic {name}: kind {kind!r} not in {sorted(KINDS)}")
    if cleanup not in CLEANUPS:
        raise TopicRegistryError(f"topic {name}: cleanup {cleanup!r} not in {sorted(CLEANUPS)}")
    partitions = int(raw.get("partitions", defaults.get("partitions", 1)))
    replication = int(raw.get("replication_factor", defaults.get("replication_factor", 1)))
    if partitions < 1 or replication < 1:
        raise TopicRegistryError(f"topic {name}: partitions and replication must be >= 1")
    return TopicSpec(
        name=name,
        kind=kind,
        partitions=partitions,
        replication_factor=replication,
        cleanup=cleanup,
        retention_ms=parse_retention(raw["retention"]),
        key=str(raw["key"]),
        value=str(raw["value"]),
        producers=_tuple(raw.get("producers")),
        consumers=_tuple(raw.get("consumers")),
        bundled=_bundled(name, raw, kind, cleanup),
    )


def _bundled(name: str, raw: Mapping[str, Any], kind: str, cleanup: str) -> bool:
    bundled = _flag(name, "bundled", raw.get("bundled", False))
    if bundled and "compact" in cleanup:
        # Compaction keeps one record per key: a bundle's other items would go.
        raise TopicRegistryError(f"topic {name}: a compacted topic cannot be bundled")
    if bundled and kind != "internal":
        # Contract topics are read by clients of their own: one record per item.
        raise TopicRegistryError(f"topic {name}: only internal topics can be bundled")
    return bundled


def _flag(name: str, field: str, raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise TopicRegistryError(f"topic {name}: {field} must be true or false")
    return raw


@lru_cache(maxsize=8)
def load_registry(path: Path) -> Registry:
    """Load and validate topics.yaml (cached per path: it is read-only at run time)."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TopicRegistryError(f"{path} does not exist") from None
    except yaml.YAMLError as exc:
        raise TopicRegistryError(f"{path} is not valid YAML: {exc}") from exc
    return parse_registry(doc)
