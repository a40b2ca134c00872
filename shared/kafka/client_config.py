"""How every Kafka client of convmesh connects: bootstrap servers, TLS and SASL.

Every aiokafka producer, consumer and admin client is built with
``AIOKafka...(**client_kwargs(settings), ...)`` and the Faust app with
``broker_credentials=faust_credentials(settings)``, so that the
``CONVMESH_KAFKA_*`` security settings reach each of them and none can be
forgotten. With the default PLAINTEXT both give what aiokafka and Faust do
without them.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from shared.runtime.errors import ConfigError
from shared.runtime.settings import Settings

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of an aiokafka producer, consumer or admin client."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": protocol,
    }
    if protocol in TLS_PROTOCOLS:
        kwargs["ssl_context"] = tls_context(settings)
    if protocol in SASL_PROTOCOLS:
        username, password = sasl_login(settings)
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = username  # aiokafka's name, also for SCRAM
        kwargs["sasl_plain_password"] = password
    return kwargs


def check_client_settings(settings: Settings) -> None:
    """Raise ``ConfigError`` now for a security setting no client could connect with."""
    client_kwargs(settings)


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The Faust app's ``broker_credentials``: Faust's aiokafka driver turns them
    into the same arguments as ``client_kwargs`` for its consumers and producer."""
    protocol = settings.kafka_security_protocol
    context = tls_context(settings) if protocol in TLS_PROTOCOLS else None
    if protocol in SASL_PROTOCOLS:
        username, password = sasl_login(settings)
        return SASLCredentials(
            username=username,
            password=password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,  # given, Faust says SASL_SSL; none, SASL_PLAINTEXT
        )
    if context is not None:
        return SSLCredentials(context)
    return None


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A context that verifies the brokers' certificates and host names: against
    ``CONVMESH_KAFKA_SSL_CAFILE`` when set, else against the system's CAs."""
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"CONVMESH_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile!r} is not a readable"
            f" PEM file of CA certificates: {exc}"
        ) from exc
    return context


def sasl_login(settings: Settings) -> tuple[str, str]:
    """The SASL user name and password; a SASL protocol without them is refused."""
    if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
        raise ConfigError(
            f"CONVMESH_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs"
            " CONVMESH_KAFKA_SASL_USERNAME and CONVMESH_KAFKA_SASL_PASSWORD"
        )
    return settings.kafka_sasl_username, settings.kafka_sasl_password
