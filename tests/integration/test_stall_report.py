"""The stall report's aiokafka parts read a real consumer (with the fetch wrappers the
workers use), so that the report is whole on the day a recovery hangs."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka.fetch_pacing import pace_fetches, wake_on_path
from shared.kafka.fetch_sessions import use_fetch_sessions
from shared.runtime.stall_report import connection_states, fetcher_state, partition_states
from tests.integration.helpers import create_topic

pytestmark = pytest.mark.integration


async def _read_a_record_and_report(bootstrap: str, topic: str) -> dict[str, object]:
    await create_topic(bootstrap, topic, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"v", key=b"k", partition=1)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        fetcher = consumer._fetcher
        use_fetch_sessions(fetcher)
        wake_on_path(fetcher, [topic])
        pace_fetches(fetcher, 0.01)
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(tps)
        got: list[object] = []
        async with asyncio.timeout(60):
            while not got:
                batches = await consumer.getmany(timeout_ms=500)
                got = [r for records in batches.values() for r in records]
        return {
            "partitions": partition_states(consumer),
            "fetcher": fetcher_state(fetcher),
            "connections": connection_states(fetcher._client),
        }
    finally:
        await consumer.stop()


def test_the_report_reads_partitions_fetcher_and_connections_of_a_real_consumer(
    bootstrap: str, namespace: str
) -> None:
    topic = f"{namespace}.stall-report"
    report = asyncio.run(_read_a_record_and_report(bootstrap, topic))

    partitions = report["partitions"]
    assert isinstance(partitions, dict)
    assert partitions[f"{topic}:1"]["position"] == 1  # past the one record read
    assert partitions[f"{topic}:1"]["paused"] is False
    assert partitions[f"{topic}:0"]["highwater"] == 0

    fetcher = report["fetcher"]
    assert isinstance(fetcher, dict)
    assert fetcher["routine_done"] is False
    assert len(fetcher["sessions"]) == 1  # one broker, one fetch session

    connections = report["connections"]
    assert isinstance(connections, dict) and connections
    assert all(c["connected"] and c["reader_done"] is False for c in connections.values())
    assert any(c["reading"] for c in connections.values())
