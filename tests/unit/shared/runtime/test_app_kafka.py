"""create_app's Kafka clients honour the TLS / SASL settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types import TP

from shared.kafka.partitioner import Partitioner
from shared.runtime.app import LeanMonitor, create_app
from shared.runtime.settings import Settings


def worker_settings(tmp_path: Path, service: str = "dedupe", **kw: Any) -> Settings:
    return Settings(service=service, data_dir=tmp_path, web_port=6199, dev_mode=True, **kw)


def auth_of_app(tmp_path: Path, **kw: str) -> dict[str, object]:
    """What Faust's aiokafka driver gives its consumers and producer."""
    s = worker_settings(tmp_path, **kw)
    conf = create_app(s).conf
    return dict(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))


def test_plaintext_app_connects_as_before(tmp_path: Path) -> None:
    assert auth_of_app(tmp_path) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_app_logs_in_over_tls(tmp_path: Path) -> None:
    auth = auth_of_app(
        tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="convmesh",
        kafka_sasl_password="s3cret",
    )
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("convmesh", "s3cret")
    assert auth["ssl_context"] is not None


def test_consumer_fetch_size_comes_from_settings(tmp_path: Path) -> None:
    """CONVMESH_CONSUMER_FETCH_KB bounds what one fetch brings per partition."""
    s = worker_settings(tmp_path, consumer_fetch_kb=256)
    assert create_app(s).conf.consumer_max_fetch_size == 256 * 1024


async def test_consumer_fetch_wait_comes_from_settings(tmp_path: Path) -> None:
    """The aiokafka consumer asks the broker to hold a fetch for CONVMESH_CONSUMER_FETCH_MIN_KB
    or CONVMESH_CONSUMER_FETCH_WAIT_MS, where Faust fixes 1 byte and 1500 ms."""
    s = worker_settings(tmp_path, consumer_fetch_min_kb=32, consumer_fetch_wait_ms=15)
    app = create_app(s)
    client = app.consumer._thread._create_worker_consumer(app.transport)
    assert (client._fetch_min_bytes, client._fetch_max_wait_ms) == (32 * 1024, 15)


@pytest.mark.parametrize("on", [True, False])
def test_fetch_sessions_come_from_settings(tmp_path: Path, on: bool) -> None:
    """CONVMESH_CONSUMER_FETCH_SESSIONS reaches the consumer whose thread puts them in place."""
    s = worker_settings(tmp_path, consumer_fetch_sessions=on)
    assert create_app(s).consumer.fetch_sessions is on


async def test_an_app_that_wakes_on_its_path_keeps_the_minimum_and_paces(tmp_path: Path) -> None:
    """A service whose agents read what its other agents send names its path topics: the
    consumer knows them by their real names, keeps the minimum size for its first fetch
    and paces fetches CONVMESH_CONSUMER_FETCH_GAP_MS apart."""
    s = worker_settings(
        tmp_path,
        service="identity_match",
        namespace="ns",
        consumer_fetch_min_kb=32,
        consumer_fetch_gap_ms=25,
        consumer_wake_on_path=True,
    )
    app = create_app(s, wake_on=("identity.lookups",))
    client = app.consumer._thread._create_worker_consumer(app.transport)
    assert client._fetch_min_bytes == 32 * 1024
    assert app.consumer.wake_topics == frozenset({s.topic_name("identity.lookups")})
    assert app.consumer.fetch_gap_s == 0.025


@pytest.mark.parametrize(("wake_on", "on"), [((), True), (("identity.lookups",), False)])
async def test_other_apps_neither_wake_nor_pace(
    tmp_path: Path, wake_on: tuple[str, ...], on: bool
) -> None:
    """No path topics, or CONVMESH_CONSUMER_WAKE_ON_PATH off (the default): no wake, no
    pace."""
    s = worker_settings(tmp_path, service="identity_match", consumer_wake_on_path=on)
    app = create_app(s, wake_on=wake_on)
    assert app.consumer.wake_topics == frozenset()
    assert app.consumer.fetch_gap_s == 0.0


def test_producer_places_keys_with_the_shared_partitioner(tmp_path: Path) -> None:
    s = worker_settings(tmp_path)
    assert isinstance(create_app(s).conf.producer_partitioner, Partitioner)


def test_the_monitor_keeps_only_what_faust_reads_back(tmp_path: Path) -> None:
    """LeanMonitor: no per-record statistics, but each partition's last
    inbound time (Faust's slow-processing check reads it) and read offset."""
    s = worker_settings(tmp_path)
    monitor = create_app(s).monitor
    assert isinstance(monitor, LeanMonitor)
    tp = TP("conversions.valid", 3)
    monitor.on_message_in(tp, 41, object())
    monitor.on_stream_event_in(tp, 41, object(), object())
    monitor.on_stream_event_out(tp, 41, object(), object(), None)
    monitor.on_message_out(tp, 41, object())
    assert monitor.tp_read_offsets[tp] == 41
    assert tp in monitor.stream_inbound_time
    assert monitor.events_total == 0 and monitor.messages_received_total == 0
