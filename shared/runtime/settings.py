"""One typed, immutable settings object per process, built from the environment.

Every knob is an environment variable with a documented default (see
README.md, "Configuration"). Nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.runtime.errors import ConfigError

SERVICES: tuple[str, ...] = ("ingest", "dedupe", "identity_match", "attribute", "aggregate")

#: Each service's first web port with the default CONVMESH_WEB_PORT_BASE (6100);
#: worker N of a service listens on base + N. With another base, every port
#: shifts by the same amount (see ``Settings.service_base_port``).
BASE_WEB_PORTS: Mapping[str, int] = {
    "ingest": 6100,
    "dedupe": 6110,
    "identity_match": 6120,
    "attribute": 6130,
    "aggregate": 6140,
}

DEFAULT_WEB_PORT_BASE = 6100

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

DAY_S = 86_400

#: Development default only: set CONVMESH_PSEUDONYM_KEYS in any real deployment.
DEFAULT_PSEUDONYM_KEYS: tuple[tuple[str, str], ...] = (("k0", "convmesh-dev-pseudonym-key"),)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _int(env, name, default)
    if not 0 < port < 65_536:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {port}")
    return port


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a convmesh process may be configured with."""

    service: str = "cli"
    worker: int = 0
    bootstrap: str = "127.0.0.1:9092"
    #: True when KAFKA_BOOTSTRAP was given: an external cluster, start no broker.
    external_broker: bool = False
    namespace: str = ""
    data_dir: Path = REPO_ROOT / "var"
    topics_file: Path = REPO_ROOT / "topics.yaml"
    web_host: str = "127.0.0.1"
    web_port: int = 0
    log_level: str = "INFO"
    #: Keys for the user pseudonym, newest first: "kid:secret,kid:secret".
    pseudonym_keys: tuple[tuple[str, str], ...] = DEFAULT_PSEUDONYM_KEYS
    dedup_window_s: int = 172_800
    #: How long conversions wait for late links / late engagements (seconds).
    late_horizon_s: int = 7 * DAY_S
    #: How soon the group notices a dead worker (a restarted one waits this long).
    session_timeout_s: int = 15
    max_record_bytes: int = 1_000_000
    batch_size: int = 500
    batch_within_s: float = 0.2
    broker_heap_mb: int = 512
    #: Ports of the local broker that `convmesh broker start` runs.
    broker_port: int = 9092
    controller_port: int = 9093
    #: First web port of the mesh (ingest); the other services follow in steps of 10.
    web_port_base: int = DEFAULT_WEB_PORT_BASE
    #: Downloaded broker jars live here, outside the purgeable data dir.
    cache_dir: Path = Path.home() / ".cache" / "convmesh"
    #: Conversions API: calls per minute per ad account (token bucket, per ingest worker).
    api_rate_per_minute: int = 5_000
    #: Conversions API: largest request body (1000 events of up to ~4 KB each).
    api_max_body_bytes: int = 4_194_304
    #: Conversions API: requests one worker handles at once; more are answered 503.
    api_max_in_flight: int = 64
    #: Conversions API: how long a request waits for the broker's acknowledgement.
    api_publish_timeout_s: float = 10.0
    #: Conversions API: when > 0, every ingest worker also serves the API on this port,
    #: bound with SO_REUSEPORT so that several workers share it (0: only the worker's web port).
    api_port: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def app_id(self) -> str:
        """The Faust app id: consumer group, changelog prefix and data folder."""
        base = f"convmesh-{self.service}"
        return f"{self.namespace}-{base}" if self.namespace else base

    @property
    def worker_data_dir(self) -> Path:
        return self.data_dir / "services" / self.service / f"worker-{self.worker}"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    def service_base_port(self, service: str) -> int:
        """Web port of worker 0 of ``service`` under this settings' port base."""
        return BASE_WEB_PORTS[service] - DEFAULT_WEB_PORT_BASE + self.web_port_base

    def topic_name(self, name: str) -> str:
        """The real Kafka name of a registry topic (namespaced for isolated test runs)."""
        return f"{self.namespace}.{name}" if self.namespace else name

    @classmethod
    def from_env(
        cls, service: str = "cli", worker: int | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        env = os.environ if env is None else env
        if service != "cli" and service not in SERVICES:
            raise ConfigError(f"unknown service {service!r}; expected one of {SERVICES}")
        worker = _int(env, "CONVMESH_WORKER", 0) if worker is None else worker
        web_port_base = _int(env, "CONVMESH_WEB_PORT_BASE", DEFAULT_WEB_PORT_BASE)
        offset = BASE_WEB_PORTS.get(service, DEFAULT_WEB_PORT_BASE - 1) - DEFAULT_WEB_PORT_BASE
        default_port = web_port_base + offset + worker
        bootstrap = env.get("KAFKA_BOOTSTRAP", "")
        broker_port = _port(env, "CONVMESH_BROKER_PORT", 9092)
        data_dir = Path(_str(env, "CONVMESH_DATA_DIR", str(REPO_ROOT / "var"))).resolve()
        return cls(
            service=service,
            worker=worker,
            bootstrap=bootstrap or f"127.0.0.1:{broker_port}",
            external_broker=bool(bootstrap),
            namespace=_str(env, "CONVMESH_NAMESPACE", ""),
            data_dir=data_dir,
            topics_file=Path(_str(env, "CONVMESH_TOPICS_FILE", str(REPO_ROOT / "topics.yaml"))),
            web_host=_str(env, "CONVMESH_WEB_HOST", "127.0.0.1"),
            web_port=_int(env, "CONVMESH_WEB_PORT", default_port),
            log_level=_str(env, "CONVMESH_LOG_LEVEL", "INFO").upper(),
            pseudonym_keys=_parse_keys(env.get("CONVMESH_PSEUDONYM_KEYS")),
            dedup_window_s=_int(env, "CONVMESH_DEDUP_WINDOW_S", 172_800),
            late_horizon_s=_int(env, "CONVMESH_LATE_HORIZON_S", 7 * DAY_S),
            session_timeout_s=_int(env, "CONVMESH_SESSION_TIMEOUT_S", 15),
            max_record_bytes=_int(env, "CONVMESH_MAX_RECORD_BYTES", 1_000_000),
            batch_size=_int(env, "CONVMESH_BATCH_SIZE", 500),
            batch_within_s=float(_str(env, "CONVMESH_BATCH_WITHIN_S", "0.2")),
            broker_heap_mb=_int(env, "CONVMESH_BROKER_HEAP_MB", 512),
            broker_port=broker_port,
            controller_port=_port(env, "CONVMESH_CONTROLLER_PORT", 9093),
            web_port_base=web_port_base,
            cache_dir=Path(
                _str(env, "CONVMESH_CACHE_DIR", str(Path.home() / ".cache" / "convmesh"))
            ).resolve(),
            api_rate_per_minute=_int(env, "CONVMESH_API_RATE_PER_MINUTE", 5_000),
            api_max_body_bytes=_int(env, "CONVMESH_API_MAX_BODY_BYTES", 4_194_304),
            api_max_in_flight=_int(env, "CONVMESH_API_MAX_IN_FLIGHT", 64),
            api_publish_timeout_s=float(_str(env, "CONVMESH_API_PUBLISH_TIMEOUT_S", "10")),
            api_port=_int(env, "CONVMESH_API_PORT", 0),
            extra={k: v for k, v in env.items() if k.startswith("CONVMESH_X_")},
        )


def _parse_keys(raw: str | None) -> tuple[tuple[str, str], ...]:
    if not raw:
        return DEFAULT_PSEUDONYM_KEYS
    keys: list[tuple[str, str]] = []
    for part in raw.split(","):
        kid, sep, secret = part.partition(":")
        if not sep or not kid or not secret:
            raise ConfigError("CONVMESH_PSEUDONYM_KEYS must look like 'kid:secret[,kid:secret...]'")
        keys.append((kid.strip(), secret.strip()))
    return tuple(keys)
