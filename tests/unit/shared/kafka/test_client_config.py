"""shared.kafka.client_config: the TLS / SASL arguments of every Kafka client."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from shared.kafka.client_config import client_kwargs, faust_credentials
from shared.runtime.errors import ConfigError
from shared.runtime.settings import Settings

CA_FILE = Path(__file__).parent / "data" / "test-ca.pem"  # self-signed "convmesh test CA"
BOOTSTRAP = "kafka-1:9093,kafka-2:9093"
LOGIN = {"kafka_sasl_username": "convmesh", "kafka_sasl_password": "s3cret"}


def settings(protocol: str, **kw: Any) -> Settings:
    return Settings(bootstrap=BOOTSTRAP, kafka_security_protocol=protocol, **kw)


def ca_names(context: ssl.SSLContext) -> list[Any]:
    return [cert["subject"] for cert in context.get_ca_certs()]


def test_plaintext_gives_only_the_bootstrap_servers_and_aiokafkas_default() -> None:
    assert client_kwargs(settings("PLAINTEXT")) == {
        "bootstrap_servers": BOOTSTRAP,
        "security_protocol": "PLAINTEXT",  # aiokafka's default: the clients of before
    }


async def test_plaintext_client_is_configured_as_one_built_without_the_helper() -> None:
    ours = AIOKafkaClient(**client_kwargs(settings("PLAINTEXT")))
    before = AIOKafkaClient(bootstrap_servers=BOOTSTRAP)
    for attribute in (
        "_bootstrap_servers",
        "_security_protocol",
        "_ssl_context",
        "_sasl_mechanism",
    ):
        assert getattr(ours, attribute) == getattr(before, attribute), attribute


def test_ssl_verifies_brokers_against_the_ca_file() -> None:
    kwargs = client_kwargs(settings("SSL", kafka_ssl_cafile=str(CA_FILE)))
    context = kwargs["ssl_context"]
    assert kwargs["security_protocol"] == "SSL"
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert ((("commonName", "convmesh test CA"),),) in ca_names(context)


def test_ssl_sends_no_sasl_login() -> None:
    kwargs = client_kwargs(settings("SSL", kafka_ssl_cafile=str(CA_FILE), **LOGIN))
    assert not [k for k in kwargs if k.startswith("sasl_")]


def test_ssl_without_ca_file_still_verifies_certificates() -> None:
    context = client_kwargs(settings("SSL"))["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CONVMESH_KAFKA_SSL_CAFILE"):
        client_kwargs(settings("SSL", kafka_ssl_cafile=str(tmp_path / "missing.pem")))


def test_sasl_plaintext_sends_the_login_without_tls() -> None:
    kwargs = client_kwargs(
        settings("SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512", **LOGIN)
    )
    assert kwargs == {
        "bootstrap_servers": BOOTSTRAP,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "convmesh",
        "sasl_plain_password": "s3cret",
    }


def test_sasl_ssl_sends_the_login_over_tls() -> None:
    kwargs = client_kwargs(settings("SASL_SSL", kafka_ssl_cafile=str(CA_FILE), **LOGIN))
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_plain_username"] == "convmesh"
    assert ((("commonName", "convmesh test CA"),),) in ca_names(kwargs["ssl_context"])


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_without_a_password_is_a_config_error(protocol: str) -> None:
    with pytest.raises(ConfigError, match="CONVMESH_KAFKA_SASL_PASSWORD"):
        client_kwargs(settings(protocol, kafka_sasl_username="convmesh"))


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
async def test_aiokafka_accepts_the_arguments(protocol: str) -> None:
    AIOKafkaClient(**client_kwargs(settings(protocol, kafka_ssl_cafile=str(CA_FILE), **LOGIN)))


def test_faust_credentials_are_none_for_plaintext() -> None:
    assert faust_credentials(settings("PLAINTEXT")) is None


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_driver_gets_the_security_of_the_plain_clients(protocol: str) -> None:
    s = settings(protocol, kafka_ssl_cafile=str(CA_FILE), **LOGIN)
    faust_side = credentials_to_aiokafka_auth(faust_credentials(s))
    plain_side = client_kwargs(s)
    del plain_side["bootstrap_servers"]  # Faust takes the servers from its broker URL
    assert faust_side.keys() <= plain_side.keys() | {"ssl_context"}
    for key, value in plain_side.items():
        if key == "ssl_context":
            assert ca_names(faust_side[key]) == ca_names(value)
        else:
            assert faust_side[key] == value, key
