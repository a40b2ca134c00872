"""docker-compose.yml and Dockerfile: structure checks (no Docker engine needed)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from shared.runtime.settings import BASE_WEB_PORTS, REPO_ROOT, SERVICES


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_every_service_plus_kafka_and_topics_job(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "topics", *SERVICES}


def test_kafka_runs_kraft_3_9_1_without_auto_create(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert kafka["healthcheck"]["test"]
    assert any(v.endswith(":/var/lib/kafka/data") for v in kafka["volumes"])


def test_topics_job_applies_the_registry_once(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    assert topics["command"][:3] == ["convmesh", "topics", "apply"]
    assert topics["environment"]["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics["restart"] == "no"


@pytest.mark.parametrize("name", SERVICES)
def test_service_container(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    env = svc["environment"]
    assert svc["command"] == ["python", "-m", f"services.{name}"]
    assert svc["image"] == "convmesh:local"  # one image for all services
    assert svc["build"] == {"context": ".", "target": "service"}
    assert env["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["CONVMESH_WEB_HOST"] == "0.0.0.0"
    port = BASE_WEB_PORTS[name]
    assert env["CONVMESH_WEB_PORT"] == str(port)
    # Published on the host's loopback only: operator views are not for the network.
    assert svc["ports"] == [f"127.0.0.1:{port}:{port}"]
    # Its own RocksDB volume, mounted where CONVMESH_DATA_DIR points.
    assert svc["volumes"] == [f"{name}-data:{env['CONVMESH_DATA_DIR']}"]
    assert f"{name}-data" in compose["volumes"]
    assert svc["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
    }
    assert "/ready" in " ".join(svc["healthcheck"]["test"])


def test_no_volume_is_shared_between_services(compose: dict[str, Any]) -> None:
    mounts = [v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])]
    assert len(mounts) == len(set(mounts))
    assert set(mounts) == set(compose["volumes"])


def test_topics_job_uses_the_ops_image(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    assert topics["build"] == {"context": ".", "target": "ops"}
    assert topics["image"] != compose["services"]["ingest"]["image"]


def test_every_published_port_is_on_loopback(compose: dict[str, Any]) -> None:
    ports = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


def _stage(text: str, name: str) -> str:
    """The lines of one build stage of the Dockerfile."""
    return text.split(f" AS {name}\n", 1)[1].split("\nFROM ", 1)[0]


def test_dockerfile_is_one_parameterised_service_image_without_ops() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    service = _stage(text, "service")
    assert "ARG SERVICE" in service and "services.${SERVICE}" in service
    assert "requirements.lock" in text
    for path in ("topics.yaml", "shared", "services"):
        assert f"COPY {path} " in text
    assert "COPY ops" not in _stage(text, "base") + service
    assert "COPY ops " in _stage(text, "ops")
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "var" in ignored
