"""`convmesh topics apply`: creates everything once, then changes nothing; reports drift."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka.admin import all_specs
from shared.kafka.topics import real_name
from shared.runtime.settings import Settings
from tests.integration.helpers import cli_env, convmesh, convmesh_json


def expected_names(namespace: str) -> set[str]:
    settings = Settings.from_env(env={"CONVMESH_NAMESPACE": namespace})
    return {real_name(s, settings.topic_name) for s in all_specs(settings)}


async def set_retention(bootstrap: str, topic: str, retention_ms: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": str(retention_ms)})]
        )
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
    asyncio.run(set_retention(bootstrap, raw, 3_600_000))
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
