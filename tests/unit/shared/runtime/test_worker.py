"""shared.runtime.worker.run: configuration errors stop a worker before it builds anything;
the collector is tuned before Faust's worker starts."""

from __future__ import annotations

import gc
from pathlib import Path

import faust
import pytest

from shared.runtime.app import create_app
from shared.runtime.metrics import metrics_of
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


def test_a_worker_runs_with_the_collector_thresholds_of_its_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The thresholds are in force when Faust's worker starts, and pauses reach the metrics."""
    seen: dict[str, object] = {}

    class StubWorker:
        def __init__(self, app: faust.App, **_: object) -> None:
            self.app = app

        def execute_from_commandline(self) -> None:
            seen["thresholds"] = gc.get_threshold()
            gc.collect()
            seen["metrics"] = metrics_of(self.app).exposition().decode()

    before, callbacks = gc.get_threshold(), list(gc.callbacks)
    monkeypatch.setenv("CONVMESH_DEV_MODE", "true")
    monkeypatch.setenv("CONVMESH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CONVMESH_GC_THRESHOLDS", "12345,11,13")
    monkeypatch.setattr(faust, "Worker", StubWorker)
    try:
        run("dedupe", lambda settings: create_app(settings))
    finally:
        gc.set_threshold(*before)
        gc.callbacks[:] = callbacks
    assert seen["thresholds"] == (12345, 11, 13)
    assert 'convmesh_gc_pause_seconds_count{generation="2"}' in str(seen["metrics"])
