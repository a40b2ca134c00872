"""One typed, immutable settings object per process, built from the environment.

Every setting is declared once, as a field of ``Settings``: its default is the
default of its environment variable, and its metadata names the variable and
says what it means. ``from_env`` reads exactly these variables; the README's
configuration table is generated from them (``python -m shared.runtime.settings``)
and a test keeps the two equal. Nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

#: Shortest secret accepted for keys and tokens: 32 bytes (256 bits).
MIN_SECRET_BYTES = 32

#: Used only in development mode (CONVMESH_DEV_MODE): public, so never safe.
DEV_PSEUDONYM_KEYS: tuple[tuple[str, str], ...] = (
    ("dev", "convmesh-development-pseudonym-key-not-secret"),
)
DEV_OPERATOR_TOKEN = "convmesh-development-operator-token"
DEV_TOKEN_SECRET = "convmesh-development-token-signing-secret"
DEV_IDENTIFIER_KEY = "convmesh-development-identifier-key-not-secret"

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


# ------------------------------------------------------------------ parsers


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _positive_int(name: str, raw: str) -> int:
    value = _int(name, raw)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


def _non_negative_int(name: str, raw: str) -> int:
    value = _int(name, raw)
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {value}")
    return value


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _non_negative_float(name: str, raw: str) -> float:
    value = _float(name, raw)
    if not value >= 0:  # NaN too
        raise ConfigError(f"{name} must be 0 or more, got {raw!r}")
    return value


#: The longest changelog hold: a rebalance waits for the held batches (docs/design.md),
#: and must end well within the consumer group's session timeout.
MAX_CHANGELOG_HOLD_S = 5.0


def _changelog_hold(name: str, raw: str) -> float:
    value = _non_negative_float(name, raw)
    if value > MAX_CHANGELOG_HOLD_S:
        raise ConfigError(f"{name} must be at most {MAX_CHANGELOG_HOLD_S} s, got {raw!r}")
    return value


def _port(name: str, raw: str) -> int:
    port = _int(name, raw)
    if not 0 < port < 65_536:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {port}")
    return port


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _path(_name: str, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _upper(_name: str, raw: str) -> str:
    return raw.strip().upper()


def _str(_name: str, raw: str) -> str:
    return raw


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _three_positive_ints(name: str, raw: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3:
        raise ConfigError(f"{name} must be three integers like '20000,20,20', got {raw!r}")
    values = tuple(_positive_int(name, p) for p in parts)
    return (values[0], values[1], values[2])


def _keys(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    keys: list[tuple[str, str]] = []
    for part in raw.split(","):
        kid, sep, secret = part.strip().partition(":")
        if not sep or not kid.strip() or not secret.strip():
            raise ConfigError(f"{name} must look like 'kid:secret[,kid:secret...]'")
        keys.append((kid.strip(), secret.strip()))
    return tuple(keys)


def env_field(
    env: str, default: Any, doc: str, parse: Callable[[str, str], Any] = _str, **kw: Any
) -> Any:
    """A settings field read from ``env``; its default is the variable's default."""
    return field(default=default, metadata={"env": env, "doc": doc, "parse": parse}, **kw)


def _shown(value: Any) -> str:
    if isinstance(value, Path):
        if value.is_relative_to(REPO_ROOT):
            return f"./{value.relative_to(REPO_ROOT)}"
        if value.is_relative_to(Path.home()):
            return f"~/{value.relative_to(Path.home())}"
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value in ("", (), None):
        return "unset"
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a convmesh process may be configured with.

    Fields with ``metadata["env"]`` come from that environment variable; the
    others (``service``, ``worker`` of the process, ``extra``) are set by
    ``from_env`` itself.
    """

    service: str = "cli"
    worker: int = env_field(
        "CONVMESH_WORKER", 0, "worker number of one service process (set by `convmesh up`)", _int
    )
    bootstrap: str = env_field(
        "KAFKA_BOOTSTRAP",
        "127.0.0.1:9092",
        "an existing cluster (`host:port[,host:port]`); when set, no local broker is started."
        " Unset: the local broker, `127.0.0.1:<CONVMESH_BROKER_PORT>`",
    )
    #: True when KAFKA_BOOTSTRAP was given: an external cluster, start no broker.
    external_broker: bool = False
    kafka_security_protocol: str = env_field(
        "CONVMESH_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "Kafka `security.protocol` of every client: " + ", ".join(KAFKA_SECURITY_PROTOCOLS),
        _choice(*KAFKA_SECURITY_PROTOCOLS),
    )
    kafka_sasl_mechanism: str = env_field(
        "CONVMESH_KAFKA_SASL_MECHANISM",
        "PLAIN",
        "SASL mechanism with a SASL protocol: " + ", ".join(KAFKA_SASL_MECHANISMS),
        _choice(*KAFKA_SASL_MECHANISMS),
    )
    kafka_sasl_username: str = env_field(
        "CONVMESH_KAFKA_SASL_USERNAME", "", "SASL user name", repr=False
    )
    kafka_sasl_password: str = env_field(
        "CONVMESH_KAFKA_SASL_PASSWORD", "", "SASL password (secret)", repr=False
    )
    kafka_ssl_cafile: str = env_field(
        "CONVMESH_KAFKA_SSL_CAFILE", "", "CA file that signs the brokers' certificates (TLS)"
    )
    namespace: str = env_field(
        "CONVMESH_NAMESPACE",
        "",
        "prefix of topic names and consumer groups (isolated runs on a shared cluster)",
    )
    data_dir: Path = env_field(
        "CONVMESH_DATA_DIR",
        REPO_ROOT / "var" / "mesh",
        "broker data, RocksDB state, logs and pid files of the local mesh (default:"
        " `var/mesh/` of the checkout; tests and benchmarks keep their files beside it in `var/`)",
        _path,
    )
    topics_file: Path = env_field(
        "CONVMESH_TOPICS_FILE",
        REPO_ROOT / "topics.yaml",
        "the topic registry (default: `topics.yaml` of the checkout)",
        _path,
    )
    web_host: str = env_field(
        "CONVMESH_WEB_HOST", "127.0.0.1", "address the services' web servers bind to"
    )
    web_port_base: int = env_field(
        "CONVMESH_WEB_PORT_BASE",
        DEFAULT_WEB_PORT_BASE,
        "web port of ingest; dedupe, identity_match, attribute, aggregate follow at"
        " +10, +20, +30, +40; worker N adds N",
        _int,
    )
    web_port: int = env_field(
        "CONVMESH_WEB_PORT",
        0,
        "web port of one worker (set by `convmesh up`). Unset: from the base",
        _int,
    )
    log_level: str = env_field(
        "CONVMESH_LOG_LEVEL", "INFO", "log level; logs are JSON lines on stderr", _upper
    )
    dev_mode: bool = env_field(
        "CONVMESH_DEV_MODE",
        False,
        "development mode: public development keys and tokens stand in for the secrets"
        " below (the demo and the tests set it; never in production)",
        _bool,
    )
    pseudonym_keys: tuple[tuple[str, str], ...] = env_field(
        "CONVMESH_PSEUDONYM_KEYS",
        (),
        "keys of the user pseudonym, newest first: `kid:secret[,kid:secret...]`, each"
        " secret at least 32 bytes (required outside development mode)",
        _keys,
        repr=False,
    )
    identifier_key: str = env_field(
        "CONVMESH_IDENTIFIER_KEY",
        "",
        "HMAC key of every identifier inside the pipeline (internal topics and tables):"
        " `ip_ua`, click ids and user ids; at least 32 bytes (required outside development"
        " mode). Changing it orphans every stored link, index and user state (the"
        " internal ids change)",
        repr=False,
    )
    operator_token: str = env_field(
        "CONVMESH_OPERATOR_TOKEN",
        "",
        "bearer token of the operator web views (e.g. ingest `/stats`); at least 32 bytes"
        " (required outside development mode)",
        repr=False,
    )
    token_secret: str = env_field(
        "CONVMESH_TOKEN_SECRET",
        "",
        "HMAC key that signs `api.tokens` records; at least 32 bytes (required outside"
        " development mode)",
        repr=False,
    )
    dedup_window_s: int = env_field(
        "CONVMESH_DEDUP_WINDOW_S", 172_800, "deduplication window (seconds)", _int
    )
    late_horizon_s: int = env_field(
        "CONVMESH_LATE_HORIZON_S",
        604_800,
        "how long conversions wait for late identity links and engagements (seconds)",
        _int,
    )
    session_timeout_s: int = env_field(
        "CONVMESH_SESSION_TIMEOUT_S",
        15,
        "consumer-group session timeout: how soon a dead worker's partitions move"
        " (and how long a restarted one waits)",
        _int,
    )
    standby_replicas: int = env_field(
        "CONVMESH_STANDBY_REPLICAS",
        0,
        "standby copies of each table partition on other workers of the service"
        " (docs/reliability.md, standby replicas)",
        _int,
    )
    max_record_bytes: int = env_field(
        "CONVMESH_MAX_RECORD_BYTES",
        1_000_000,
        "largest input record; larger ones go to the dead-letter topic",
        _int,
    )
    batch_size: int = env_field(
        "CONVMESH_BATCH_SIZE", 500, "records per processing batch", _positive_int
    )
    batch_within_s: float = env_field(
        "CONVMESH_BATCH_WITHIN_S",
        0.04,
        "longest wait to fill a batch (seconds); a batch whose fetch is all in it ends sooner",
        _float,
    )
    batch_per_fetch: bool = env_field(
        "CONVMESH_BATCH_PER_FETCH",
        True,
        "end an agent's batch as soon as it holds every record of the fetch they came in,"
        " instead of at the next tick of CONVMESH_BATCH_WITHIN_S (docs/benchmarks.md,"
        " a batch per fetch)",
        _bool,
    )
    batch_gap_s: float = env_field(
        "CONVMESH_BATCH_GAP_S",
        0.02,
        "shortest time between the starts of an agent's batches that are not full"
        " (seconds): bounds the batches per second, and so their cost, at moderate rates",
        _float,
    )
    diagnostics_batch_within_s: float = env_field(
        "CONVMESH_DIAGNOSTICS_BATCH_WITHIN_S",
        0.5,
        "longest wait to fill a batch of the setup diagnostics agents (seconds): they are"
        " off the conversions' path, so fewer, larger batches spare the CPU the path needs",
        _float,
    )
    reports_batch_within_s: float = env_field(
        "CONVMESH_REPORTS_BATCH_WITHIN_S",
        0.25,
        "longest wait to fill a batch of aggregate's report rows (seconds): a row changed"
        " by several deltas of one batch is written and published once, and the rows are"
        " after conversions.attributed, off the latency of its path",
        _float,
    )
    gc_thresholds: tuple[int, int, int] = env_field(
        "CONVMESH_GC_THRESHOLDS",
        (20000, 20, 20),
        "Python's garbage collector thresholds (gen0,gen1,gen2): a young generation large"
        " enough that a batch's objects die young, instead of CPython's 700,10,10 and its"
        " frequent full collections (docs/benchmarks.md, the garbage collector)",
        _three_positive_ints,
    )
    batch_pipeline: int = env_field(
        "CONVMESH_BATCH_PIPELINE",
        0,
        "processed batches an agent may have on their way to the broker (outputs, state,"
        " offsets) while it processes the next; 0 finishes each batch before the next"
        " (experimental above 0: docs/benchmarks.md, pipelined batches)",
        _non_negative_int,
    )
    changelog_wait_s: float = env_field(
        "CONVMESH_CHANGELOG_WAIT_S",
        0.1,
        "longest a batch's changelog records wait, once its outputs are acked and its state"
        " is in RocksDB, to leave in one produce request with the next batch's outputs"
        " (seconds); 0 sends them on their own at once, one produce request more per batch"
        " (docs/benchmarks.md, the changelog with the next batch)",
        _non_negative_float,
    )
    changelog_hold_s: float = env_field(
        "CONVMESH_CHANGELOG_HOLD_S",
        0.25,
        "how long a batch's carried changelog records take in the next batches' (seconds):"
        " a key written again within it leaves once, and the inputs of those batches are"
        " committed together once it is acked (docs/benchmarks.md, the changelog held);"
        " at most 5: a rebalance waits for them",
        _changelog_hold,
    )
    changelog_hold_kb: int = env_field(
        "CONVMESH_CHANGELOG_HOLD_KB",
        1024,
        "a held changelog with this many KiB of keys and values or more leaves with the"
        " next batch, whatever its age: it bounds what holding it keeps in memory per agent",
        _positive_int,
    )
    bundle_records: bool = env_field(
        "CONVMESH_BUNDLE_RECORDS",
        True,
        "send a batch's records of each topic marked bundled in topics.yaml as one record"
        " per partition; consumers read both forms, so turn it off while workers from"
        " before bundling still run (docs/operations.md)",
        _bool,
    )
    consumer_fetch_kb: int = env_field(
        "CONVMESH_CONSUMER_FETCH_KB",
        256,
        "largest fetch per input partition (KiB); with the partitions a worker reads it"
        " bounds the records it holds in memory (docs/benchmarks.md)",
        _positive_int,
    )
    consumer_fetch_min_kb: int = env_field(
        "CONVMESH_CONSUMER_FETCH_MIN_KB",
        64,
        "the broker holds a fetch until this much (KiB) has arrived or"
        " CONVMESH_CONSUMER_FETCH_WAIT_MS is over: fewer, fuller fetches at moderate rates",
        _positive_int,
    )
    consumer_fetch_sessions: bool = env_field(
        "CONVMESH_CONSUMER_FETCH_SESSIONS",
        True,
        "fetch in incremental fetch sessions (KIP-227): a request names only the partitions"
        " whose offset moved and an answer only those with news, not every partition a worker"
        " reads (docs/benchmarks.md, fetch sessions)",
        _bool,
    )
    consumer_fetch_wait_ms: int = env_field(
        "CONVMESH_CONSUMER_FETCH_WAIT_MS",
        60,
        "longest the broker holds a fetch for CONVMESH_CONSUMER_FETCH_MIN_KB (ms): every"
        " fetch costs a worker 1-2.5 CPU ms over all its partitions, so at moderate rates a"
        " longer wait spares CPU the conversions' path needs; 30 cuts the latency of a"
        " lightly loaded mesh (docs/benchmarks.md, the fetch wait without the flush storm)",
        _non_negative_int,
    )
    consumer_wake_on_path: bool = env_field(
        "CONVMESH_CONSUMER_WAKE_ON_PATH",
        False,
        "a worker whose agents feed each other (identity_match, attribute) asks for no"
        " minimum size in the fetch after one that brought conversions on their path, so"
        " that the records one of its agents sends to another do not wait out the fetch"
        " wait; its fetches CONVMESH_CONSUMER_FETCH_GAP_MS apart. Halves the latency of a"
        " mesh with CPU to spare, costs 15-30% more CPU per conversion near saturation"
        " (docs/benchmarks.md, fetches that wake on the conversions' path)",
        _bool,
    )
    consumer_fetch_gap_ms: int = env_field(
        "CONVMESH_CONSUMER_FETCH_GAP_MS",
        20,
        "shortest time between two fetches of a worker that wakes on the conversions' path"
        " (ms): without a minimum size, records arriving one by one could otherwise make it"
        " fetch as fast as it can; it paces all its fetches, so keep it below the fetch wait",
        _non_negative_int,
    )
    reports_fetch_wait_ms: int = env_field(
        "CONVMESH_REPORTS_FETCH_WAIT_MS",
        150,
        "aggregate's fetch wait, in place of CONVMESH_CONSUMER_FETCH_WAIT_MS (ms): all its"
        " inputs come after conversions.attributed, so fewer fetches cost the target nothing",
        _non_negative_int,
    )
    rocksdb_cache_mb: int = env_field(
        "CONVMESH_ROCKSDB_CACHE_MB",
        32,
        "block cache shared by every RocksDB store of a worker (MiB)",
        _int,
    )
    rocksdb_memtables_mb: int = env_field(
        "CONVMESH_ROCKSDB_MEMTABLES_MB",
        32,
        "memtable budget shared by every RocksDB store of a worker (MiB)",
        _int,
    )
    rocksdb_wal: bool = env_field(
        "CONVMESH_ROCKSDB_WAL",
        False,
        "write every table's RocksDB stores through RocksDB's write-ahead log; off (the"
        " default), a table that no other table of its service shares a source with skips"
        " it, as Kafka Streams' stores do: a kill -9 loses the writes since its store's last"
        " flush, and the restart replays them from the changelog (docs/reliability.md); the"
        " services write less than half as much to disk",
        _bool,
    )
    broker_heap_mb: int = env_field(
        "CONVMESH_BROKER_HEAP_MB", 512, "maximum Java heap of the local broker", _int
    )
    broker_port: int = env_field("CONVMESH_BROKER_PORT", 9092, "port of the local broker", _port)
    controller_port: int = env_field(
        "CONVMESH_CONTROLLER_PORT", 9093, "KRaft controller port of the local broker", _port
    )
    cache_dir: Path = env_field(
        "CONVMESH_CACHE_DIR",
        Path.home() / ".cache" / "convmesh",
        "broker jars (kept by `down --purge`)",
        _path,
    )
    api_port: int = env_field(
        "CONVMESH_API_PORT",
        0,
        "if > 0, ingest workers also serve the Conversions API on this shared port",
        _int,
    )
    api_rate_per_minute: int = env_field(
        "CONVMESH_API_RATE_PER_MINUTE",
        5_000,
        "API calls per minute per ad account and ingest worker",
        _int,
    )
    api_max_body_bytes: int = env_field(
        "CONVMESH_API_MAX_BODY_BYTES", 4_194_304, "largest API request body", _int
    )
    api_max_in_flight: int = env_field(
        "CONVMESH_API_MAX_IN_FLIGHT",
        64,
        "concurrent API requests per worker (more get 503)",
        _int,
    )
    api_account_share: float = env_field(
        "CONVMESH_API_ACCOUNT_SHARE",
        0.25,
        "largest share of the in-flight requests one ad account may hold (more get 429)",
        _float,
    )
    api_header_timeout_s: float = env_field(
        "CONVMESH_API_HEADER_TIMEOUT_S",
        10.0,
        "how long a client may take to send a request's headers",
        _float,
    )
    api_body_timeout_s: float = env_field(
        "CONVMESH_API_BODY_TIMEOUT_S",
        30.0,
        "how long a client may take to send a request's body",
        _float,
    )
    api_publish_timeout_s: float = env_field(
        "CONVMESH_API_PUBLISH_TIMEOUT_S",
        10.0,
        "how long an API request waits for Kafka's acknowledgement",
        _float,
    )
    privacy_release_delay_s: int = env_field(
        "CONVMESH_PRIVACY_RELEASE_DELAY_S",
        259_200,
        "protected lane: a date is released this long after its end (seconds)",
        _int,
    )
    privacy_user_cap: int = env_field(
        "CONVMESH_PRIVACY_USER_CAP",
        1,
        "protected lane: conversions one user contributes to one release",
        _int,
    )
    privacy_value_cap: float = env_field(
        "CONVMESH_PRIVACY_VALUE_CAP",
        1000.0,
        "protected lane: each conversion's value is clipped to [0, this]",
        _float,
    )
    privacy_epsilon_per_release: float = env_field(
        "CONVMESH_PRIVACY_EPSILON_PER_RELEASE",
        1.0,
        "protected lane: ε one release of one (ad account, date) costs",
        _float,
    )
    privacy_k: int = env_field(
        "CONVMESH_PRIVACY_K",
        50,
        "protected lane: least noisy user count of a published row; modeled lane:"
        " least identified conversions of a modeled stratum",
        _int,
    )
    privacy_epsilon_per_week: float = env_field(
        "CONVMESH_PRIVACY_EPSILON_PER_WEEK",
        4.0,
        "protected lane: ε budget per ad account and ISO week",
        _float,
    )
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

    @property
    def active_pseudonym_keys(self) -> tuple[tuple[str, str], ...]:
        """The pseudonym keys in force (the development key only in development mode)."""
        return self.pseudonym_keys or (DEV_PSEUDONYM_KEYS if self.dev_mode else ())

    @property
    def active_identifier_key(self) -> str:
        return self.identifier_key or (DEV_IDENTIFIER_KEY if self.dev_mode else "")

    @property
    def active_operator_token(self) -> str:
        return self.operator_token or (DEV_OPERATOR_TOKEN if self.dev_mode else "")

    @property
    def active_token_secret(self) -> str:
        return self.token_secret or (DEV_TOKEN_SECRET if self.dev_mode else "")

    def require_secrets(self) -> None:
        """Refuse to run a service without real secrets outside development mode.

        Raises ``ConfigError`` naming every missing or weak secret.
        """
        problems: list[str] = []
        for kid, secret in self.pseudonym_keys:
            if len(secret.encode()) < MIN_SECRET_BYTES:
                problems.append(f"CONVMESH_PSEUDONYM_KEYS key {kid!r} is under 32 bytes")
        for name, value in (
            ("CONVMESH_IDENTIFIER_KEY", self.identifier_key),
            ("CONVMESH_OPERATOR_TOKEN", self.operator_token),
            ("CONVMESH_TOKEN_SECRET", self.token_secret),
        ):
            if value and len(value.encode()) < MIN_SECRET_BYTES:
                problems.append(f"{name} is under 32 bytes")
        if not self.dev_mode:
            required: tuple[tuple[str, object], ...] = (
                ("CONVMESH_PSEUDONYM_KEYS", self.pseudonym_keys),
                ("CONVMESH_IDENTIFIER_KEY", self.identifier_key),
                ("CONVMESH_OPERATOR_TOKEN", self.operator_token),
                ("CONVMESH_TOKEN_SECRET", self.token_secret),
            )
            for required_name, present in required:
                if not present:
                    problems.append(f"{required_name} is required (or set CONVMESH_DEV_MODE=true)")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_env(
        cls, service: str = "cli", worker: int | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        env = os.environ if env is None else env
        if service != "cli" and service not in SERVICES:
            raise ConfigError(f"unknown service {service!r}; expected one of {SERVICES}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata.get("env")
            raw = env.get(name) if name else None
            if raw is not None and raw.strip() != "":
                values[f.name] = f.metadata["parse"](name, raw)
        if worker is not None:
            values["worker"] = worker
        values["external_broker"] = "bootstrap" in values
        if not values["external_broker"]:
            values["bootstrap"] = f"127.0.0.1:{values.get('broker_port', 9092)}"
        settings = cls(
            service=service,
            extra={k: v for k, v in env.items() if k.startswith("CONVMESH_X_")},
            **values,
        )
        if not settings.web_port:
            offset = BASE_WEB_PORTS.get(service, DEFAULT_WEB_PORT_BASE - 1) - DEFAULT_WEB_PORT_BASE
            port = settings.web_port_base + offset + settings.worker
            settings = dataclasses.replace(settings, web_port=port)
        return settings


def default_of(name: str) -> Any:
    """The declared default of one settings field (its environment default)."""
    return Settings.__dataclass_fields__[name].default


def environment_table() -> str:
    """The README's configuration table, generated from the fields above."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        if "env" not in f.metadata:
            continue
        doc = f.metadata["doc"]
        lines.append(f"| `{f.metadata['env']}` | `{_shown(f.default)}` | {doc} |")
    lines.append(
        "| `CONVMESH_X_*` | | free-form experimental flags, passed through as `Settings.extra` |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(environment_table())
