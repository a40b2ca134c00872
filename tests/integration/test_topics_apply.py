"""`convmesh topics apply`: creates everything once, then changes nothing; reports drift."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from shared.kafka.admin import all_specs
from shared.kafka.topics import real_name
from shared.runtime.settings import Settings
from tests.integration.helpers import cli_env, convmesh, convmesh_json


def expected_names(namespace: str) -> set[str]:
    settings = Settings.from_env(env={"CONVMESH_NAMESPACE": namespace})
    return {real_name(s, settings.topic_name) for s in all_specs(settings)}


async def set_configs(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Set a topic's own configs by hand (all of them: AlterConfigs replaces the set)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()


async def topic_config(bootstrap: str, topic: str, key: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(_err, _msg, _rtype, _name, entries)] = response.resources
        return next((e[1] for e in entries if e[0] == key), None)
    finally:
        await admin.close()


async def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {m["topic"]: len(m["partitions"]) for m in await admin.describe_topics(names)}
    finally:
        await admin.close()


def test_apply_is_idempotent_and_reports_drift(bootstrap: str, namespace: str) -> None:
    env = cli_env(KAFKA_BOOTSTRAP=bootstrap, CONVMESH_NAMESPACE=namespace)
    want = expected_names(namespace)

    first = convmesh_json("topics", "apply", "--json", env=env)
    assert set(first["created"]) == want
    assert first["unchanged"] == [] and first["drift"] == {}

    second = convmesh_json("topics", "apply", "--json", env=env)
    assert second["created"] == []
    assert set(second["unchanged"]) == want
    assert second["drift"] == {}

    counts = asyncio.run(partition_counts(bootstrap, sorted(want)))
    assert counts[f"{namespace}.conversions.raw"] == 8
    assert counts[f"{namespace}.api.tokens"] == 1

    # Someone changes a topic by hand: apply reports it, --strict fails on it.
    raw = f"{namespace}.conversions.raw"
    # An operator's own setting (segment.ms) beside the drifted one (retention.ms).
    hand_made = {"cleanup.policy": "delete", "retention.ms": "3600000", "segment.ms": "600000"}
    asyncio.run(set_configs(bootstrap, raw, hand_made))
    # The broker applies a config change through its metadata log: allow a moment.
    deadline = time.monotonic() + 15
    while True:
        drifted = convmesh_json("topics", "apply", "--json", env=env)
        if drifted["drift"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert list(drifted["drift"]) == [raw]
    assert "retention.ms" in drifted["drift"][raw][0]
    strict = convmesh("topics", "apply", "--strict", env=env)
    assert strict.returncode == 1
    assert f"DRIFT      {raw}" in strict.stdout

    # --fix-configs sets topics.yaml's configs again (the way to new settings, too).
    fixed = convmesh_json("topics", "apply", "--fix-configs", "--json", env=env)
    assert fixed["fixed"] == [raw] and fixed["drift"] == {}
    deadline = time.monotonic() + 15
    while True:
        after = convmesh_json("topics", "apply", "--json", env=env)
        if not after["drift"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after["drift"] == {} and after["fixed"] == []
    assert asyncio.run(topic_config(bootstrap, raw, "segment.ms")) == "600000"  # kept


async def send_one(bootstrap: str, topic: str, value: bytes) -> str | None:
    """Send one record; the error's type name if the broker refuses it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 << 20)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k", partition=0)
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        await producer.stop()
    return None


def test_a_changelog_takes_a_value_past_the_brokers_one_megabyte(
    bootstrap: str, namespace: str
) -> None:
    """A table value that grew past 1 MB is still written (topics.yaml,
    changelog_max_message_bytes); a plain topic keeps the broker's limit."""
    env = cli_env(KAFKA_BOOTSTRAP=bootstrap, CONVMESH_NAMESPACE=namespace)
    assert convmesh("topics", "apply", env=env).returncode == 0
    changelog = Settings(namespace=namespace, service="attribute").app_id + "-users-changelog"
    two_mib = b"x" * (2 << 20)
    assert asyncio.run(send_one(bootstrap, changelog, two_mib)) is None
    refused = asyncio.run(send_one(bootstrap, f"{namespace}.conversions.dlq", two_mib))
    assert refused is not None and "TooLarge" in refused
