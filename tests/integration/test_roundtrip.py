"""A produce/consume round trip on the test broker with aiokafka."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.integration.helpers import create_topic


async def test_produce_consume_round_trip(bootstrap: str, namespace: str) -> None:
    topic = f"{namespace}.roundtrip"
    await create_topic(bootstrap, topic, partitions=2)

    sent = [(f"k{i % 3}".encode(), f"v{i}".encode()) for i in range(30)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in sent:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"{namespace}-roundtrip",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[bytes, bytes, int]] = []
    try:
        async with asyncio.timeout(60):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    received.extend((r.key, r.value, r.partition) for r in records)
    finally:
        await consumer.stop()

    assert sorted((k, v) for k, v, _ in received) == sorted(sent)
    # Same key, same partition, and per key the order of sending is kept.
    partitions: dict[bytes, set[int]] = {}
    for key, _, partition in received:
        partitions.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions.values())
    for key in partitions:
        assert [v for k, v, _ in received if k == key] == [v for k, v in sent if k == key]
