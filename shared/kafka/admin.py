"""Create the registry's topics on a cluster and report drift from topics.yaml."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka.client_config import client_kwargs
from shared.kafka.errors import TopicsError
from shared.kafka.registry_access import registry_for
from shared.kafka.topics import TopicSpec, real_name
from shared.runtime.settings import SERVICES, Settings


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: topic -> human descriptions of how the broker differs from topics.yaml
    drift: dict[str, list[str]] = field(default_factory=dict)
    #: topic -> the drift entries about configs (not partitions): ``fix_configs`` sets them
    config_drift: dict[str, list[str]] = field(default_factory=dict)
    #: topics whose configs were set to topics.yaml's (``fix_configs``)
    fixed: list[str] = field(default_factory=list)


def all_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of the registry, the changelog of every table and each service's
    own framework topics; app-scoped ones carry their real names."""
    registry = registry_for(settings)
    specs = list(registry)
    for service in SERVICES:
        app_id = Settings(service=service, namespace=settings.namespace).app_id
        specs.extend(registry.changelog_spec(t, app_id) for t in registry.tables_of(service))
        specs.extend(registry.service_topic_specs(app_id))
    return specs


async def apply_topics(
    settings: Settings, replication_factor: int | None = None, fix_configs: bool = False
) -> ApplyReport:
    """Create missing topics; compare existing ones with their declaration and, with
    ``fix_configs``, set drifted topic configs to it (partition counts stay reported:
    adding partitions would move keys)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=30_000)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        specs = all_specs(settings)
        existing = set(await admin.list_topics())
        report = ApplyReport()
        missing = []
        for spec in specs:
            name = real_name(spec, settings.topic_name)
            rf = replication_factor or min(spec.replication_factor, brokers)
            if name in existing:
                report.unchanged.append(name)
            else:
                missing.append(
                    NewTopic(name, spec.partitions, rf, topic_configs=spec.kafka_config())
                )
        if missing:
            response = await admin.create_topics(missing)
            _raise_on_create_errors(response)
            report.created.extend(t.name for t in missing)
            # A worker assigned before a topic shows in the metadata ignores it for
            # good (seen on a freshly started broker): wait until all are visible.
            await _wait_visible(admin, [t.name for t in missing])
        own_configs = await _find_drift(admin, settings, specs, report)
        if fix_configs:
            await _fix_configs(admin, settings, specs, report, own_configs)
        return report
    finally:
        await admin.close()


TOPIC_ALREADY_EXISTS = 36
VISIBLE_TIMEOUT_S = 60.0


def _raise_on_create_errors(response: Any) -> None:
    """CreateTopics reports failures per topic in its response, not as exceptions."""
    failed = [
        tuple(entry[:3])  # (topic, error_code[, error_message]) depending on the version
        for entry in getattr(response, "topic_errors", [])
        if entry[1] not in (0, TOPIC_ALREADY_EXISTS)
    ]
    if failed:
        raise TopicsError(f"the broker refused to create topics: {failed[:5]}")


async def _wait_visible(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Until every topic is described with its partitions, or TopicsError."""
    deadline = time.monotonic() + VISIBLE_TIMEOUT_S
    pending = list(names)
    while pending:
        described = await admin.describe_topics(pending)
        pending = [m["topic"] for m in described if m.get("error_code") or not m.get("partitions")]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicsError(f"topics not visible after {VISIBLE_TIMEOUT_S:.0f} s: {pending[:5]}")
        await asyncio.sleep(0.2)


#: DescribeConfigs v1+ ``config_source`` of a config set on the topic itself.
DYNAMIC_TOPIC_CONFIG = 1


def _own_configs(response: Any, entries: Any) -> dict[str, str]:
    """The configs set on a topic itself (not broker defaults), from DescribeConfigs:
    v0 marks defaults with ``is_default``, v1+ names each config's source."""
    if response.API_VERSION == 0:
        return {e[0]: e[1] for e in entries if not e[3] and e[1] is not None}
    return {e[0]: e[1] for e in entries if e[3] == DYNAMIC_TOPIC_CONFIG and e[1] is not None}


async def _find_drift(
    admin: AIOKafkaAdminClient, settings: Settings, specs: list[TopicSpec], report: ApplyReport
) -> dict[str, dict[str, str]]:
    """Add every difference from topics.yaml to ``report``; each topic's own configs."""
    by_name = {real_name(s, settings.topic_name): s for s in specs}
    names = list(by_name)
    described = await admin.describe_topics(names)
    for meta in described:
        name = meta["topic"]
        spec = by_name.get(name)
        if spec is None or meta.get("error_code"):
            continue
        actual = len(meta["partitions"])
        if actual != spec.partitions:
            report.drift.setdefault(name, []).append(
                f"partitions: broker has {actual}, topics.yaml says {spec.partitions}"
            )
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
    own: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for _err, _msg, _rtype, name, entries in response.resources:
            spec = by_name.get(name)
            if spec is None:
                continue
            own[name] = _own_configs(response, entries)
            actual_cfg = {entry[0]: entry[1] for entry in entries}
            for key, want in spec.kafka_config().items():
                got = actual_cfg.get(key)
                if got is not None and got != want:
                    problem = f"{key}: broker has {got}, topics.yaml says {want}"
                    report.drift.setdefault(name, []).append(problem)
                    report.config_drift.setdefault(name, []).append(problem)
    return own


async def _fix_configs(
    admin: AIOKafkaAdminClient,
    settings: Settings,
    specs: list[TopicSpec],
    report: ApplyReport,
    own_configs: dict[str, dict[str, str]],
) -> None:
    """Set topics.yaml's configs on every topic whose configs drifted.

    AlterConfigs (the request aiokafka has) replaces a topic's own configs as a
    whole: each topic gets its own configs as the broker has them (an operator's
    ``min.insync.replicas``, say) with the declared ones over them.
    """
    if not report.config_drift:
        return
    by_name = {real_name(s, settings.topic_name): s for s in specs}
    resources = [
        ConfigResource(
            ConfigResourceType.TOPIC,
            name,
            {**own_configs.get(name, {}), **by_name[name].kafka_config()},
        )
        for name in report.config_drift
    ]
    failed = [
        (name, code)
        for response in await admin.alter_configs(resources)
        for code, _msg, _rtype, name in response.resources
        if code
    ]
    if failed:
        done = len(resources) - len(failed)
        raise TopicsError(
            f"the broker refused to alter the configs of {len(failed)} topics (error codes:"
            f" {failed[:5]}); the other {done} were set"
        )
    for name, problems in report.config_drift.items():
        report.fixed.append(name)
        left = [p for p in report.drift[name] if p not in problems]
        if left:
            report.drift[name] = left
        else:
            del report.drift[name]
    report.config_drift = {}
