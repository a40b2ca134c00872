"""shared.runtime.worker.run: configuration errors stop a worker before it builds anything."""

from __future__ import annotations

import faust
import pytest

from shared.runtime.settings import Settings
from shared.runtime.worker import run


def never_built(settings: Settings) -> faust.App:
    raise AssertionError("the app must not be built")


def test_sasl_without_login_stops_the_worker_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVMESH_DEV_MODE", "true")
    monkeypatch.setenv("CONVMESH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.delenv("CONVMESH_KAFKA_SASL_USERNAME", raising=False)
    monkeypatch.delenv("CONVMESH_KAFKA_SASL_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as stopped:
        run("dedupe", never_built)
    assert stopped.value.code == 2
    assert "CONVMESH_KAFKA_SASL_USERNAME" in capsys.readouterr().err
