"""The ingest service end to end on the real broker.

Starts ``python -m services.ingest`` in its own namespace, data folder and web
port, produces valid and invalid records to ``<ns>.conversions.raw`` and reads
``<ns>.conversions.valid`` and ``<ns>.conversions.dlq`` back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.ingest import rules
from services.ingest import validation as v
from shared.kafka.admin import apply_topics
from shared.kafka.registry_access import registry_for
from shared.kafka.topic_io import reads_of
from shared.runtime.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

ACCOUNT = "549755885175"
OTHER = "777"
H1 = "a" * 64
H2 = "b" * 64
EMAIL = "carol.jones@example.org"
PHONE = "+44 20 7946 0958"
IP = "198.51.100.23"
UA = "Mozilla/5.0 (IntegrationBrowser 3.2)"
SECRETS = (EMAIL, PHONE, IP, UA)
MAX_RECORD_BYTES = 4_000
TIMEOUT_S = 90


def free_port(start: int = 7600) -> int:
    for port in range(start, start + 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 7600-7799")


def now_s() -> int:
    return int(time.time())


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": now_s() - 60,
        "event_id": event_id,
        "user_data": {"em": [H1], "client_ip_address": IP, "client_user_agent": UA},
        "custom_data": {"currency": "usd", "value": "10.50"},
    }
    base.update(overrides)
    return base


def envelope(ev: Any, account: str = ACCOUNT, **overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "ad_account_id": account,
        "source": "topic",
        "received_at_ms": int(time.time() * 1000),
        "event": ev,
    }
    body.update(overrides)
    return orjson.dumps(body)


class IngestProcess:
    """``python -m services.ingest`` for one namespace; may be killed and restarted."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.log = tmp_path / "ingest.log"
        self.env = {
            **os.environ,
            "CONVMESH_NAMESPACE": settings.namespace,
            "CONVMESH_DATA_DIR": str(tmp_path / "data"),
            "CONVMESH_WEB_PORT": str(self.port),
            "CONVMESH_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES),
            "CONVMESH_BATCH_WITHIN_S": "0.1",
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        with open(self.log, "ab") as log_file:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.ingest"],
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit."""
        proc = self.procs[-1]
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@pytest.fixture
def ingest_service(bootstrap: str, namespace: str, tmp_path: Path) -> Iterator[IngestProcess]:
    # ``bootstrap`` (the same broker as Settings.from_env) fails the test early when the
    # broker is down, and lets conftest's namespace fixture delete the topics afterwards.
    settings = dataclasses.replace(Settings.from_env(), namespace=namespace)
    try:
        asyncio.run(asyncio.wait_for(apply_topics(settings, replication_factor=1), 60))
    except Exception as exc:  # noqa: BLE001 - an unreachable broker fails the test
        pytest.fail(f"Kafka broker at {settings.bootstrap} unreachable: {exc!r}")
    service = IngestProcess(settings, tmp_path)
    service.start()
    try:
        yield service
    finally:
        service.stop_all()
        assert all(proc.poll() is not None for proc in service.procs)


async def produce(settings: Settings, records: list[tuple[bytes | None, bytes | None]]) -> list:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        topic = settings.topic_name("conversions.raw")
        metas = []
        for key, value in records:
            metas.append(await producer.send_and_wait(topic, key=key, value=value))
        return metas
    finally:
        await producer.stop()


async def read_all(settings: Settings, name: str, expected: int) -> list[Any]:
    """Every record of a topic, waiting until ``expected`` arrived, then 3 s for extras."""
    topic = settings.topic_name(name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = registry_for(settings).topic(name).partitions
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + TIMEOUT_S
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                records.extend(read for m in msgs for read in reads_of(m))
            if len(records) >= expected and settle_until is None:
                settle_until = time.monotonic() + 3
            if settle_until is not None and time.monotonic() > settle_until:
                break
        return records
    finally:
        await consumer.stop()


def stats(port: int, settings: Settings) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/stats",
        headers={"Authorization": f"Bearer {settings.active_operator_token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return orjson.loads(response.read())


async def test_ingest_routes_valid_and_invalid_records(ingest_service: IngestProcess):
    settings = ingest_service.settings
    key = ACCOUNT.encode()
    first_time = now_s() - 600
    valid_inputs: list[tuple[bytes | None, bytes | None]] = [
        (key, envelope(event("v-1"))),
        (key, envelope(event("v-2", action_source="offline"), source="batch")),
        (key, envelope(event("v-3", user_data={"hashed_maids": [H2.upper()]}))),
        (OTHER.encode(), envelope(event("v-4", custom_data={}), account=OTHER, source="tag")),
        # Two events of one conversion_key: they must reach conversions.valid in order.
        (key, envelope(event("v-5", event_time=first_time))),
        (key, envelope(event("v-5", event_time=first_time + 1))),
    ]
    oversized = envelope(event("big", partner_name="x" * MAX_RECORD_BYTES))
    invalid_inputs: list[tuple[bytes | None, bytes | None, str]] = [
        (key, b"\xff\xfe not json " + EMAIL.encode(), rules.INVALID_JSON),
        (key, None, rules.EMPTY_RECORD),
        (key, oversized, rules.RECORD_TOO_LARGE),
        (key, b"[1, 2, 3]", rules.NOT_AN_OBJECT),
        (b"999", envelope(event("k-1")), rules.KEY_MISMATCH),
        (key, envelope(event("s-1"), source="email"), rules.INVALID_SOURCE),
        (
            key,
            envelope(event("u-1", user_data={"em": [EMAIL], "ph": [PHONE]})),
            v.UNHASHED_IDENTIFIER,
        ),
        (key, envelope(event("t-1", event_time=now_s() * 1000)), v.EVENT_TIME_IN_MILLISECONDS),
        (key, envelope(event("n-1", event_name="purchase")), v.INVALID_EVENT_NAME),
        (key, envelope(event("c-1", custom_data={"value": "NaN"})), v.INVALID_VALUE),
        (
            key,
            envelope(event("i-1", user_data={"client_ip_address": IP})),
            v.MISSING_USER_IDENTIFIERS,
        ),
    ]
    records = [*valid_inputs, *((k, val) for k, val, _ in invalid_inputs)]
    metas = await produce(settings, records)
    valid_metas = metas[: len(valid_inputs)]
    invalid_metas = metas[len(valid_inputs) :]

    valid_out = await read_all(settings, "conversions.valid", len(valid_inputs))
    dlq_out = await read_all(settings, "conversions.dlq", len(invalid_inputs))

    # conversions.valid: each valid input exactly once, keyed by conversion_key.
    raw_topic = settings.topic_name("conversions.raw")
    expected_refs = {f"{raw_topic}:{m.partition}:{m.offset}" for m in valid_metas}
    messages = [orjson.loads(r.value) for r in valid_out]
    assert sorted(m["raw_ref"] for m in messages) == sorted(expected_refs)
    for record, message in zip(valid_out, messages, strict=True):
        assert record.key == message["conversion_key"].encode()
    keys = {m["event_id"]: m["conversion_key"] for m in messages}
    assert keys["v-1"] == f"{ACCOUNT}:checkout:v-1:online"
    assert keys["v-2"] == f"{ACCOUNT}:checkout:v-2:offline"
    assert keys["v-4"] == f"{OTHER}:checkout:v-4:online"
    assert next(m for m in messages if m["event_id"] == "v-3")["ids"]["hashed_maids"] == [H2]
    same_key = [m["event_time"] for m in messages if m["event_id"] == "v-5"]
    assert same_key == [first_time, first_time + 1]

    # conversions.dlq: each invalid input once, with its reason.
    dlq = {(d["partition"], d["offset"]): d for d in (orjson.loads(r.value) for r in dlq_out)}
    assert len(dlq) == len(dlq_out) == len(invalid_inputs)
    for meta, (_k, _val, reason) in zip(invalid_metas, invalid_inputs, strict=True):
        record = dlq[(meta.partition, meta.offset)]
        assert record["reason"] == reason
        assert record["source_topic"] == raw_topic
    for record in dlq_out:
        decoded = orjson.loads(record.value)
        expected_key = decoded["ad_account_id"].encode() if decoded["ad_account_id"] else None
        assert record.key == expected_key

    # No plaintext identifier anywhere in the outputs or the service's logs.
    log_text = ingest_service.log.read_text(encoding="utf-8", errors="replace")
    outputs = b"".join((r.key or b"") + (r.value or b"") for r in [*valid_out, *dlq_out])
    for secret in SECRETS:
        assert secret.encode() not in outputs, secret
        assert secret not in log_text, secret
    assert log_text.count('"ingest_rejected"') >= len(invalid_inputs)

    # Per-source counters: received = valid + rejected.
    counters = stats(ingest_service.port, settings)
    totals = counters["totals"]
    assert totals == {
        "received": len(records),
        "valid": len(valid_inputs),
        "rejected": len(invalid_inputs),
    }
    assert counters["by_source"]["batch"] == {"received": 1, "valid": 1, "rejected": 0}


async def produce_fast(settings: Settings, values: list[tuple[bytes, bytes]]) -> list[Any]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        topic = settings.topic_name("conversions.raw")
        futures = [await producer.send(topic, key=k, value=val) for k, val in values]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def wait_for_count(settings: Settings, name: str, count: int) -> None:
    topic = settings.topic_name(name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p) for p in range(registry_for(settings).topic(name).partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        deadline = time.monotonic() + TIMEOUT_S
        while seen < count:
            assert time.monotonic() < deadline, f"only {seen} records on {topic}"
            batch = await consumer.getmany(timeout_ms=100)
            seen += sum(len(reads_of(m)) for msgs in batch.values() for m in msgs)
    finally:
        await consumer.stop()


async def test_ingest_killed_mid_stream_loses_nothing(ingest_service: IngestProcess):
    """kill -9 while batches are in flight, restart: every input reaches conversions.valid."""
    settings = ingest_service.settings
    total = 20_000
    when = now_s() - 60
    values = [
        (ACCOUNT.encode(), envelope(event(f"kill-{i}", event_time=when))) for i in range(total)
    ]
    metas = await produce_fast(settings, values)
    await wait_for_count(settings, "conversions.valid", total // 10)
    ingest_service.kill()
    ingest_service.start()

    raw_topic = settings.topic_name("conversions.raw")
    expected = {f"{raw_topic}:{m.partition}:{m.offset}" for m in metas}
    out = await read_all(settings, "conversions.valid", total)
    refs = [orjson.loads(r.value)["raw_ref"] for r in out]
    assert set(refs) == expected
    # At-least-once: a redelivered record is the same message again (same raw_ref).
    assert len(refs) >= total
    assert await read_all(settings, "conversions.dlq", 0) == []
