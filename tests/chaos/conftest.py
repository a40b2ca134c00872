"""The chaos suite runs on a broker of its own (never the shared one), see test_chaos.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.mesh import ChaosMesh


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """Remember each phase's outcome on the test item (the fixture reads it)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def chaos_mesh(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ChaosMesh]:
    """Broker, topics and the five services with their own ports and data dir; purged after.

    CONVMESH_CHAOS_KEEP=1 keeps everything of a *failed* run (broker, topics,
    stores, worker logs) for inspection.
    """
    mesh = ChaosMesh.create(tmp_path / "mesh")
    try:
        mesh.up()
        yield mesh
    finally:
        call = getattr(request.node, "report_call", None)
        failed = call is None or call.failed
        if failed and os.environ.get("CONVMESH_CHAOS_KEEP"):
            print(f"\n[chaos] kept: {mesh.data_dir} bootstrap {mesh.bootstrap} ns {mesh.namespace}")
        else:
            mesh.purge()
