"""Settings: defaults, environment parsing, errors, immutability."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shared.runtime.errors import ConfigError
from shared.runtime.settings import (
    BASE_WEB_PORTS,
    REPO_ROOT,
    SERVICES,
    Settings,
    environment_table,
)


def test_defaults_without_environment() -> None:
    s = Settings.from_env(env={})
    assert s.service == "cli"
    assert s.bootstrap == "127.0.0.1:9092"
    assert s.external_broker is False
    assert s.namespace == ""
    assert s.data_dir == (REPO_ROOT / "var" / "mesh").resolve()
    assert s.broker_port == 9092
    assert s.controller_port == 9093
    assert s.web_port_base == 6100
    assert s.broker_heap_mb == 512
    assert s.cache_dir == (Path.home() / ".cache" / "convmesh").resolve()


@pytest.mark.parametrize("service", SERVICES)
def test_default_web_ports_follow_base_ports(service: str) -> None:
    assert Settings.from_env(service, env={}).web_port == BASE_WEB_PORTS[service]
    assert Settings.from_env(service, worker=3, env={}).web_port == BASE_WEB_PORTS[service] + 3


def test_web_port_base_shifts_every_service() -> None:
    env = {"CONVMESH_WEB_PORT_BASE": "7100"}
    ports = {s: Settings.from_env(s, env=env).web_port for s in SERVICES}
    assert ports == {
        "ingest": 7100,
        "dedupe": 7110,
        "identity_match": 7120,
        "attribute": 7130,
        "aggregate": 7140,
    }
    cli = Settings.from_env(env=env)
    assert cli.service_base_port("aggregate") == 7140


def test_explicit_web_port_wins() -> None:
    env = {"CONVMESH_WEB_PORT": "7555", "CONVMESH_WEB_PORT_BASE": "7100"}
    assert Settings.from_env("dedupe", env=env).web_port == 7555


def test_worker_comes_from_environment() -> None:
    s = Settings.from_env("dedupe", env={"CONVMESH_WORKER": "2"})
    assert s.worker == 2
    assert s.worker_data_dir.parts[-3:] == ("services", "dedupe", "worker-2")


def test_bootstrap_follows_broker_port_unless_external() -> None:
    local = Settings.from_env(env={"CONVMESH_BROKER_PORT": "19092"})
    assert local.bootstrap == "127.0.0.1:19092"
    assert local.external_broker is False
    external = Settings.from_env(
        env={"KAFKA_BOOTSTRAP": "kafka:9092", "CONVMESH_BROKER_PORT": "19092"}
    )
    assert external.bootstrap == "kafka:9092"
    assert external.external_broker is True


def test_namespace_prefixes_topics_and_app_id() -> None:
    s = Settings.from_env("dedupe", env={"CONVMESH_NAMESPACE": "t1"})
    assert s.topic_name("conversions.raw") == "t1.conversions.raw"
    assert s.app_id == "t1-convmesh-dedupe"
    plain = Settings.from_env("dedupe", env={})
    assert plain.topic_name("conversions.raw") == "conversions.raw"
    assert plain.app_id == "convmesh-dedupe"


def test_paths_and_levels_are_parsed() -> None:
    env = {
        "CONVMESH_DATA_DIR": "/tmp/cm-data",
        "CONVMESH_CACHE_DIR": "/tmp/cm-cache",
        "CONVMESH_LOG_LEVEL": "debug",
        "CONVMESH_BATCH_WITHIN_S": "0.5",
        "CONVMESH_REPORTS_BATCH_WITHIN_S": "0.3",
        "CONVMESH_X_FEATURE": "on",
        "UNRELATED": "x",
    }
    s = Settings.from_env(env=env)
    assert s.data_dir == Path("/tmp/cm-data").resolve()
    assert s.broker_dir == s.data_dir / "broker"
    assert s.cache_dir == Path("/tmp/cm-cache").resolve()
    assert s.log_level == "DEBUG"
    assert s.batch_within_s == 0.5
    assert s.reports_batch_within_s == 0.3
    assert dict(s.extra) == {"CONVMESH_X_FEATURE": "on"}


def test_gc_thresholds_are_three_integers() -> None:
    assert Settings.from_env(env={}).gc_thresholds == (20000, 20, 20)
    s = Settings.from_env(env={"CONVMESH_GC_THRESHOLDS": "700, 10,10"})
    assert s.gc_thresholds == (700, 10, 10)


def test_empty_values_mean_default() -> None:
    s = Settings.from_env(env={"CONVMESH_BROKER_PORT": "", "KAFKA_BOOTSTRAP": ""})
    assert s.broker_port == 9092
    assert s.external_broker is False


def test_pseudonym_keys_parse_newest_first() -> None:
    s = Settings.from_env(env={"CONVMESH_PSEUDONYM_KEYS": "k2:new, k1:old"})
    assert s.pseudonym_keys == (("k2", "new"), ("k1", "old"))


@pytest.mark.parametrize(
    "env",
    [
        {"CONVMESH_BATCH_SIZE": "many"},
        {"CONVMESH_BATCH_SIZE": "0"},
        {"CONVMESH_CONSUMER_FETCH_KB": "0"},
        {"CONVMESH_BROKER_PORT": "0"},
        {"CONVMESH_CONTROLLER_PORT": "70000"},
        {"CONVMESH_WEB_PORT_BASE": "x"},
        {"CONVMESH_PSEUDONYM_KEYS": "no-colon"},
        {"CONVMESH_PSEUDONYM_KEYS": "k1:"},
        {"CONVMESH_GC_THRESHOLDS": "700,10"},
        {"CONVMESH_GC_THRESHOLDS": "0,10,10"},
        {"CONVMESH_GC_THRESHOLDS": "a,b,c"},
        {"CONVMESH_CHANGELOG_HOLD_S": "-0.1"},
        {"CONVMESH_CHANGELOG_HOLD_S": "6"},
        {"CONVMESH_CHANGELOG_HOLD_KB": "0"},
    ],
)
def test_bad_values_raise_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env=env)


def test_unknown_service_raises() -> None:
    with pytest.raises(ConfigError, match="unknown service"):
        Settings.from_env("billing", env={})


def test_settings_are_immutable() -> None:
    s = Settings.from_env(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.bootstrap = "elsewhere:9092"  # type: ignore[misc]
    changed = dataclasses.replace(s, broker_port=19092)
    assert s.broker_port == 9092 and changed.broker_port == 19092


def test_readme_table_is_the_generated_one() -> None:
    """README's configuration table equals the one generated from the fields."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert environment_table() in readme


def test_every_env_field_is_read_from_its_variable() -> None:
    """Each declared variable reaches its field (no default written twice)."""
    env = {"CONVMESH_DEDUP_WINDOW_S": "60", "CONVMESH_PRIVACY_K": "7", "CONVMESH_DEV_MODE": "yes"}
    s = Settings.from_env(env=env)
    assert (s.dedup_window_s, s.privacy_k, s.dev_mode) == (60, 7, True)
    names = [f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata]
    assert len(names) == len(set(names))


def test_services_refuse_to_start_without_secrets_outside_dev_mode() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env("dedupe", env={}).require_secrets()
    names = ("CONVMESH_PSEUDONYM_KEYS", "CONVMESH_IDENTIFIER_KEY", "CONVMESH_OPERATOR_TOKEN")
    for name in (*names, "CONVMESH_TOKEN_SECRET"):
        assert name in str(caught.value)


def test_dev_mode_uses_the_public_development_secrets() -> None:
    s = Settings.from_env("dedupe", env={"CONVMESH_DEV_MODE": "true"})
    s.require_secrets()
    assert s.active_pseudonym_keys and s.active_operator_token and s.active_token_secret


def test_weak_keys_are_refused_even_in_dev_mode() -> None:
    env = {"CONVMESH_DEV_MODE": "true", "CONVMESH_PSEUDONYM_KEYS": "k1:short"}
    with pytest.raises(ConfigError, match="under 32 bytes"):
        Settings.from_env("dedupe", env=env).require_secrets()


def test_real_secrets_start_without_dev_mode() -> None:
    strong = "x" * 32
    env = {
        "CONVMESH_PSEUDONYM_KEYS": f"k2:{strong},k1:{'y' * 40}",
        "CONVMESH_OPERATOR_TOKEN": strong,
        "CONVMESH_TOKEN_SECRET": strong,
        "CONVMESH_IDENTIFIER_KEY": strong,
    }
    s = Settings.from_env("dedupe", env=env)
    s.require_secrets()
    assert s.active_pseudonym_keys[0] == ("k2", strong)


def test_secrets_are_not_in_the_repr() -> None:
    secret = "s" * 40
    s = Settings.from_env(env={"CONVMESH_OPERATOR_TOKEN": secret, "CONVMESH_TOKEN_SECRET": secret})
    assert secret not in repr(s)


@pytest.mark.parametrize(
    "env",
    [
        {"CONVMESH_KAFKA_SECURITY_PROTOCOL": "TLS"},
        {"CONVMESH_KAFKA_SASL_MECHANISM": "GSSAPI"},
        {"CONVMESH_DEV_MODE": "maybe"},
        {"CONVMESH_PRIVACY_EPSILON_PER_RELEASE": "lots"},
    ],
)
def test_bad_choices_raise_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env=env)
