"""A local single-node Kafka broker (KRaft) from Maven Central jars.

No Docker and no Kafka download page: Maven fetches the broker jars once into
a cache outside the data dir (``purge`` keeps them), the storage is formatted
once, and ``kafka.Kafka`` runs as a detached process remembered by a pid file.
Why 3.9.1 and not 4.x: docs/operations.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog
from aiokafka.admin import AIOKafkaAdminClient

from ops.errors import BrokerError
from ops.procs import claim_data_dir, log_tail, running_pid, spawn_detached, stop_pids
from shared.kafka.client_config import client_kwargs
from shared.runtime.settings import REPO_ROOT, Settings

KAFKA_VERSION = "3.9.1"
POM = REPO_ROOT / "broker" / "pom.xml"
_COMPLETE = ".complete"  # written last: a half-finished download is never used


def log() -> structlog.typing.FilteringBoundLogger:
    """A logger made per call: it follows the logging configuration of the moment
    (a module-level logger would keep the output stream of its first use)."""
    return structlog.get_logger(component="broker")


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    #: running (ours), stopped, external (KAFKA_BOOTSTRAP) or foreign (a broker
    #: that convmesh did not start answers on our port)
    state: str
    bootstrap: str
    reachable: bool
    pid: int | None = None
    log: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------- paths
def libs_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"


def pid_path(settings: Settings) -> Path:
    return settings.broker_dir / "broker.pid"


def log_path(settings: Settings) -> Path:
    return settings.broker_dir / "logs" / "server.log"


# ---------------------------------------------------------------------- jars
def ensure_jars(settings: Settings) -> Path:
    """The broker's jar folder, fetched with Maven on first use."""
    libs = libs_dir(settings)
    if (libs / _COMPLETE).exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed once to fetch the Kafka broker jars")
    libs.parent.mkdir(parents=True, exist_ok=True)
    log().info("fetching broker jars", version=KAFKA_VERSION, into=str(libs))
    # Download next to the target, then rename: concurrent or interrupted runs
    # never leave a partial folder behind under the final name.
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    argv = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-Dstyle.color=never",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(f"mvn failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    if not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError("mvn finished but the kafka_2.13 jar is missing")
    (staging / _COMPLETE).write_text(KAFKA_VERSION)
    try:
        staging.replace(libs)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return libs


# -------------------------------------------------------------------- config
def server_properties(settings: Settings) -> str:
    host = "127.0.0.1"
    port, ctrl = settings.broker_port, settings.controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{ctrl}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={settings.broker_dir / 'data'}",
            # One node: internal topics cannot have more replicas than brokers.
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            # Consumers join at once instead of waiting 3 s for more members.
            "group.initial.rebalance.delay.ms=0",
            # Every topic comes from topics.yaml (`convmesh topics apply`).
            "auto.create.topics.enable=false",
            "num.partitions=1",
            # A deleted topic's files go a second after it, not a minute (the broker's
            # default of the topics' file.delete.delay.ms, also the delay of a deleted
            # topic's whole folder). The benchmarks and the test suites delete their
            # namespaces' topics at the end; the unlinking (0.3-0.6 CPU s for a bench
            # run's topics) then landed in the middle of the next run
            # (docs/benchmarks.md, "A warm-up for the mesh").
            "log.segment.delete.delay.ms=1000",
            "",
        ]
    )


def log4j_properties(settings: Settings) -> str:
    return "\n".join(
        [
            "log4j.rootLogger=INFO, file",
            "log4j.appender.file=org.apache.log4j.RollingFileAppender",
            f"log4j.appender.file.File={log_path(settings)}",
            "log4j.appender.file.MaxFileSize=50MB",
            "log4j.appender.file.MaxBackupIndex=2",
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
            # The request and state-change loggers are very chatty at INFO.
            "log4j.logger.kafka.request.logger=WARN",
            "log4j.logger.state.change.logger=WARN",
            "",
        ]
    )


def _write_config(settings: Settings) -> Path:
    settings.broker_dir.mkdir(parents=True, exist_ok=True)
    (settings.broker_dir / "logs").mkdir(exist_ok=True)
    (settings.broker_dir / "log4j.properties").write_text(log4j_properties(settings))
    props = settings.broker_dir / "server.properties"
    props.write_text(server_properties(settings))
    return props


def _java(settings: Settings, libs: Path, main: str, *args: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java (17+) is needed to run the local Kafka broker")
    heap = settings.broker_heap_mb
    return [
        java,
        f"-Xms{min(256, heap)}m",
        f"-Xmx{heap}m",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{settings.broker_dir / 'log4j.properties'}",
        f"-Dkafka.logs.dir={settings.broker_dir / 'logs'}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def _format_storage(settings: Settings, libs: Path, props: Path) -> None:
    """Format KRaft storage once; a formatted folder has meta.properties."""
    if (settings.broker_dir / "data" / "meta.properties").exists():
        return
    tool = "kafka.tools.StorageTool"
    uuid = subprocess.run(
        _java(settings, libs, tool, "random-uuid"), capture_output=True, text=True, check=False
    )
    cluster_id = uuid.stdout.strip().splitlines()[-1] if uuid.stdout.strip() else ""
    if uuid.returncode != 0 or not cluster_id:
        raise BrokerError(f"StorageTool random-uuid failed: {uuid.stderr.strip()}")
    fmt = subprocess.run(
        _java(settings, libs, tool, "format", "-t", cluster_id, "-c", str(props)),
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise BrokerError(f"StorageTool format failed: {fmt.stdout.strip()} {fmt.stderr.strip()}")
    log().info("formatted broker storage", cluster_id=cluster_id)


# --------------------------------------------------------------- reachability
def port_open(bootstrap: str, timeout_s: float = 1.0) -> bool:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


async def _describe(settings: Settings, timeout_s: float) -> bool:
    # Outside the try: a wrong TLS / SASL setting (ConfigError) is not "not answering yet".
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return bool(cluster.get("brokers"))
    except Exception:  # noqa: BLE001 - any failure means "not answering yet"
        return False
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001 - closing a client that never connected
            pass


def reachable(settings: Settings, timeout_s: float = 5.0) -> bool:
    """True when the Kafka cluster of ``settings`` answers a metadata request
    (over its TLS / SASL settings)."""
    if not port_open(settings.bootstrap):
        return False
    return asyncio.run(_describe(settings, timeout_s))


# ------------------------------------------------------------------ lifecycle
def status(settings: Settings) -> BrokerStatus:
    pid = running_pid(pid_path(settings))
    up = reachable(settings, timeout_s=3.0)
    if settings.external_broker:
        state = "external"
    elif pid is not None:
        state = "running"
    elif up:
        state = "foreign"
    else:
        state = "stopped"
    return BrokerStatus(state, settings.bootstrap, up, pid, str(log_path(settings)))


def start(settings: Settings, timeout_s: float = 90.0) -> BrokerStatus:
    """Start the local broker unless one is already there; wait until it answers."""
    if settings.external_broker:
        if not reachable(settings):
            raise BrokerError(f"KAFKA_BOOTSTRAP={settings.bootstrap} does not answer")
        log().info("external broker answers; starting nothing", bootstrap=settings.bootstrap)
        return status(settings)
    if running_pid(pid_path(settings)) is not None:
        _wait_until_reachable(settings, timeout_s)
        return status(settings)
    if port_open(settings.bootstrap):
        if reachable(settings):
            log().warning(
                "a broker convmesh did not start answers; using it", bootstrap=settings.bootstrap
            )
            return status(settings)
        raise BrokerError(
            f"port {settings.broker_port} is taken by something that is not Kafka; "
            "set CONVMESH_BROKER_PORT"
        )
    if port_open(f"127.0.0.1:{settings.controller_port}"):
        raise BrokerError(
            f"controller port {settings.controller_port} is taken; set CONVMESH_CONTROLLER_PORT"
        )
    claim_data_dir(settings.data_dir)
    libs = ensure_jars(settings)
    props = _write_config(settings)
    _format_storage(settings, libs, props)
    pid = spawn_detached(
        _java(settings, libs, "kafka.Kafka", str(props)),
        pid_path=pid_path(settings),
        log_path=settings.broker_dir / "logs" / "stdout.log",
        env=os.environ,
        cwd=settings.broker_dir,
    )
    log().info("broker starting", pid=pid, bootstrap=settings.bootstrap)
    _wait_until_reachable(settings, timeout_s)
    return status(settings)


def _wait_until_reachable(settings: Settings, timeout_s: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if running_pid(pid_path(settings)) is None:
            raise BrokerError(
                "the broker exited while starting; last lines of its log:\n"
                + log_tail(log_path(settings))
                + "\n"
                + log_tail(settings.broker_dir / "logs" / "stdout.log")
            )
        if reachable(settings, timeout_s=3.0):
            log().info("broker ready", seconds=round(time.monotonic() - started, 1))
            return
        time.sleep(0.5)
    raise BrokerError(
        f"the broker did not answer within {timeout_s:.0f} s: see {log_path(settings)}"
    )


def stop(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Stop the broker this data dir started; True if one was running."""
    pid = running_pid(pid_path(settings))
    if pid is None:
        pid_path(settings).unlink(missing_ok=True)
        return False
    killed = stop_pids([pid], timeout_s)
    if killed:
        log().warning("broker did not stop in time; killed", pid=pid, timeout_s=timeout_s)
    pid_path(settings).unlink(missing_ok=True)
    log().info("broker stopped", pid=pid)
    return True
