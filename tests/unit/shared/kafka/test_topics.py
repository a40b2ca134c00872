"""The topic registry: parsing, validation, the real topics.yaml, changelogs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.kafka.admin import all_specs
from shared.kafka.errors import TopicRegistryError
from shared.kafka.topics import KINDS, load_registry, parse_registry, parse_retention
from shared.runtime.settings import REPO_ROOT, SERVICES, Settings

TOPICS_YAML = REPO_ROOT / "topics.yaml"

MINIMAL: dict[str, Any] = {
    "defaults": {"partitions": 4, "replication_factor": 3},
    "topics": {
        "in": {
            "kind": "input",
            "cleanup": "delete",
            "retention": "7d",
            "key": "k",
            "value": "v",
            "producers": ["outside"],
            "consumers": "svc",
        },
        "out": {
            "kind": "output",
            "cleanup": "compact",
            "retention": "forever",
            "key": "k",
            "value": "v",
            "partitions": 2,
            "replication_factor": 1,
        },
    },
    "tables": {"svc.state": {"service": "svc", "source": "in", "key": "k", "value": "v"}},
}


def doc(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(MINIMAL)
    d.update(changes)
    return d


# ------------------------------------------------------------------ retention
@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        ("250ms", 250),
        ("30s", 30_000),
        ("90m", 5_400_000),
        ("12h", 43_200_000),
        ("7d", 604_800_000),
        (" 70d ", 6_048_000_000),
        ("forever", -1),
        (-1, -1),
        ("-1", -1),
    ],
)
def test_parse_retention(raw: Any, ms: int) -> None:
    assert parse_retention(raw) == ms


@pytest.mark.parametrize("raw", ["7", "7w", "d7", "", "1.5h", None, "-2", "seven days"])
def test_parse_retention_rejects_bad_input(raw: Any) -> None:
    with pytest.raises(TopicRegistryError):
        parse_retention(raw)


# -------------------------------------------------------------------- parsing
def test_parse_minimal_document_applies_defaults() -> None:
    reg = parse_registry(MINIMAL)
    inp, out = reg.topic("in"), reg.topic("out")
    assert (inp.partitions, inp.replication_factor, inp.retention_ms) == (4, 3, 604_800_000)
    assert inp.producers == ("outside",) and inp.consumers == ("svc",)
    assert (out.partitions, out.replication_factor, out.retention_ms) == (2, 1, -1)
    assert out.compacted and not inp.compacted
    assert inp.kafka_config() == {"cleanup.policy": "delete", "retention.ms": "604800000"}
    assert out.kafka_config() == {"cleanup.policy": "compact"}
    assert [t.name for t in reg] == ["in", "out"]


def test_compact_delete_keeps_retention() -> None:
    d = doc()
    d["topics"]["out"]["cleanup"] = "compact,delete"
    d["topics"]["out"]["retention"] = "1d"
    assert parse_registry(d).topic("out").kafka_config() == {
        "cleanup.policy": "compact,delete",
        "retention.ms": "86400000",
    }


def test_changelogs_take_the_declared_record_size_and_topics_keep_the_default() -> None:
    d = doc()
    d["defaults"]["changelog_max_message_bytes"] = 8_388_608
    reg = parse_registry(d)
    changelog = reg.changelog_spec(reg.table("svc", "state"), "app")
    assert changelog.kafka_config() == {"cleanup.policy": "compact", "max.message.bytes": "8388608"}
    assert "max.message.bytes" not in reg.topic("in").kafka_config()
    plain = parse_registry(doc())
    assert (
        "max.message.bytes"
        not in plain.changelog_spec(plain.table("svc", "state"), "a").kafka_config()
    )


def test_a_changelog_record_size_below_the_brokers_default_is_refused() -> None:
    d = doc()
    d["defaults"]["changelog_max_message_bytes"] = 1000
    with pytest.raises(TopicRegistryError, match="changelog_max_message_bytes"):
        parse_registry(d)


def test_a_topic_is_bundled_only_when_it_says_so() -> None:
    d = _with_topic_field("kind", "internal")
    assert not parse_registry(d).topic("in").bundled
    d["topics"]["in"]["bundled"] = True
    assert parse_registry(d).topic("in").bundled


def test_the_hot_internal_hops_are_bundled_and_no_contract_topic_is() -> None:
    registry = load_registry(TOPICS_YAML)
    bundled = {spec.name for spec in registry if spec.bundled}
    assert {"identity.lookups", "identity.answers", "conversions.accepted"} <= bundled
    assert all(registry.topic(name).kind == "internal" for name in bundled)


def _without(field: str) -> dict[str, Any]:
    d = doc()
    del d["topics"]["in"][field]
    return d


def _with_topic_field(field: str, value: Any) -> dict[str, Any]:
    d = doc()
    d["topics"]["in"][field] = value
    return d


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"defaults": {}},
        doc(topics={"in": "not a mapping"}),
        *[_without(f) for f in ("kind", "cleanup", "retention", "key", "value")],
        _with_topic_field("kind", "stream"),
        _with_topic_field("cleanup", "forever"),
        _with_topic_field("retention", "7 days"),
        _with_topic_field("partitions", 0),
        _with_topic_field("replication_factor", 0),
        _with_topic_field("bundled", "yes"),
        _with_topic_field("bundled", True),  # an input topic
        doc(topics={"out": {**doc()["topics"]["out"], "kind": "internal", "bundled": True}}),
        doc(tables={"svcstate": {"service": "svc", "source": "in"}}),
        doc(tables={"svc.state": {"service": "other", "source": "in"}}),
        doc(tables={"svc.state": {"service": "svc", "source": "nowhere"}}),
    ],
)
def test_bad_documents_raise(bad: Any) -> None:
    with pytest.raises(TopicRegistryError):
        parse_registry(bad)


def test_unknown_topic_and_table_raise() -> None:
    reg = parse_registry(MINIMAL)
    with pytest.raises(TopicRegistryError, match="not declared"):
        reg.topic("nope")
    with pytest.raises(TopicRegistryError, match="not declared"):
        reg.table("svc", "nope")


def test_load_registry_reports_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(TopicRegistryError, match="does not exist"):
        load_registry(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("topics: [unclosed\n")
    with pytest.raises(TopicRegistryError, match="not valid YAML"):
        load_registry(broken)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(MINIMAL))
    assert set(load_registry(good).topics) == {"in", "out"}


# ------------------------------------------------------------ the real file
@pytest.fixture(scope="module")
def real() -> Any:
    return load_registry(TOPICS_YAML)


def test_real_topics_yaml_declares_the_contract_topics(real: Any) -> None:
    contract = {
        "conversions.raw": "input",
        "ads.engagements": "input",
        "identity.signals": "input",
        "privacy.requests": "input",
        "conversions.attributed": "output",
        "conversions.dlq": "dlq",
        "reports.conversions": "output",
    }
    assert {name: real.topic(name).kind for name in contract} == contract
    assert real.topic("conversions.attributed").compacted
    assert real.topic("reports.conversions").compacted


def test_every_real_topic_has_producers_and_consumers(real: Any) -> None:
    for spec in real:
        assert spec.kind in KINDS
        assert spec.producers, f"{spec.name} has no producers"
        assert spec.consumers, f"{spec.name} has no consumers"


def test_real_internal_topics_connect_known_services(real: Any) -> None:
    """Internal topics flow between the five services: each end names one."""
    for spec in real:
        if spec.kind != "internal":
            continue
        ends = " ".join(spec.producers + spec.consumers)
        assert any(service in ends for service in SERVICES), spec.name


def test_real_retention_covers_60_day_windows(real: Any) -> None:
    day_ms = 86_400_000
    for name in ("ads.engagements", "identity.signals"):
        assert real.topic(name).retention_ms >= 67 * day_ms


def test_real_tables_belong_to_services_and_share_partitions(real: Any) -> None:
    assert real.tables, "topics.yaml declares no tables"
    for spec in real.tables.values():
        assert spec.service in SERVICES
        assert spec.source in real.topics


def test_changelog_specs_follow_their_source_topic(real: Any) -> None:
    for spec in real.tables.values():
        app_id = Settings(service=spec.service, namespace="ns").app_id
        changelog = real.changelog_spec(spec, app_id)
        source = real.topic(spec.source)
        assert changelog.name == f"ns-convmesh-{spec.service}-{spec.table}-changelog"
        assert changelog.kind == "changelog"
        assert changelog.partitions == source.partitions
        assert changelog.cleanup == "compact" and changelog.retention_ms == -1
        assert changelog.kafka_config() == {
            "cleanup.policy": "compact",
            "max.message.bytes": str(real.changelog_max_message_bytes),
        }


def test_all_specs_has_every_topic_and_changelog_once(real: Any) -> None:
    settings = Settings(namespace="ns", topics_file=TOPICS_YAML)
    specs = all_specs(settings)
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert set(real.topics) <= set(names)
    changelogs = [s for s in specs if s.kind == "changelog"]
    assert len(changelogs) == len(real.tables)
    assert all(s.name.startswith("ns-convmesh-") for s in changelogs)


def test_all_specs_declare_fausts_own_topic_for_every_service(real: Any) -> None:
    """Faust's assignor leader topic is declared too: no topic exists undeclared."""
    specs = all_specs(Settings(namespace="ns", topics_file=TOPICS_YAML))
    leaders = {s.name for s in specs if s.kind == "framework"}
    assert leaders == {f"ns-convmesh-{svc}-__assignor-__leader" for svc in SERVICES}
    assert all(s.partitions == 1 for s in specs if s.kind == "framework")


def test_tables_one_agent_writes_together_are_not_written_alone(real: Any) -> None:
    """Tables sharing a source (one agent, one input) keep RocksDB's write-ahead log;
    the agents' own lists of the tables they write are the reference."""
    from services.aggregate.agents import TABLES as AGGREGATE_ROWS_TABLES
    from services.identity_match.agents import KEYS_TABLES

    together = [("identity_match", t) for t in KEYS_TABLES]
    together += [("aggregate", t) for t in AGGREGATE_ROWS_TABLES]
    assert len(together) > 2
    assert not any(real.written_alone(service, table) for service, table in together)
    alone = {(t.service, t.table) for t in real.tables.values()} - set(together)
    assert ("identity_match", "conversions") in alone and ("dedupe", "seen") in alone
    assert all(real.written_alone(service, table) for service, table in alone)
