"""The local broker's generated configuration (no Java needed)."""

from __future__ import annotations

from pathlib import Path

from ops import broker
from shared.runtime.settings import Settings


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_server_properties_single_node_kraft_on_configured_ports(tmp_path: Path) -> None:
    s = Settings.from_env(
        env={
            "CONVMESH_BROKER_PORT": "19092",
            "CONVMESH_CONTROLLER_PORT": "19093",
            "CONVMESH_DATA_DIR": str(tmp_path),
        }
    )
    p = props(broker.server_properties(s))
    assert p["process.roles"] == "broker,controller"
    assert p["node.id"] == "1"
    assert p["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert p["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert p["log.dirs"] == str(tmp_path / "broker" / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert p[key] == "1"
    assert p["group.initial.rebalance.delay.ms"] == "0"
    assert p["auto.create.topics.enable"] == "false"


def test_a_deleted_topics_files_go_within_a_second(tmp_path: Path) -> None:
    """Not a minute later, in the middle of the next bench run or test."""
    s = Settings.from_env(env={"CONVMESH_DATA_DIR": str(tmp_path)})
    assert props(broker.server_properties(s))["log.segment.delete.delay.ms"] == "1000"


def test_broker_logs_to_a_file_in_the_data_dir(tmp_path: Path) -> None:
    s = Settings.from_env(env={"CONVMESH_DATA_DIR": str(tmp_path)})
    p = props(broker.log4j_properties(s))
    assert p["log4j.appender.file.File"] == str(tmp_path / "broker" / "logs" / "server.log")
    assert p["log4j.rootLogger"].startswith("INFO")


def test_jar_cache_is_outside_the_data_dir(tmp_path: Path) -> None:
    s = Settings.from_env(
        env={"CONVMESH_DATA_DIR": str(tmp_path / "data"), "CONVMESH_CACHE_DIR": str(tmp_path / "c")}
    )
    libs = broker.libs_dir(s)
    assert libs == tmp_path / "c" / f"kafka-{broker.KAFKA_VERSION}" / "libs"
    assert s.data_dir not in libs.parents


def test_pom_pins_kafka_and_a_logging_binding() -> None:
    pom = broker.POM.read_text()
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert f"<version>{broker.KAFKA_VERSION}</version>" in pom
    assert "slf4j-reload4j" in pom


def test_java_command_uses_the_configured_heap(tmp_path: Path) -> None:
    s = Settings.from_env(env={"CONVMESH_BROKER_HEAP_MB": "384"})
    argv = broker._java(s, tmp_path, "kafka.Kafka", "server.properties")
    assert "-Xmx384m" in argv and "-Xms256m" in argv
    assert argv[-2:] == ["kafka.Kafka", "server.properties"]
    assert f"{tmp_path}/*" in argv


def test_unreachable_address_is_not_reachable() -> None:
    assert not broker.port_open("127.0.0.1:1", timeout_s=0.2)
    assert not broker.reachable(Settings(bootstrap="127.0.0.1:1"), timeout_s=0.5)
