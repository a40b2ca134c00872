"""The chaos suite runs on a broker of its own (never the shared one), see test_chaos.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.mesh import ChaosMesh


@pytest.fixture
def chaos_mesh(tmp_path: Path) -> Iterator[ChaosMesh]:
    """Broker, topics and the five services with their own ports and data dir; purged after."""
    mesh = ChaosMesh.create(tmp_path / "mesh")
    try:
        mesh.up()
        yield mesh
    finally:
        mesh.purge()
