"""Mesh bookkeeping that needs no running service."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ops import mesh
from ops.errors import MeshError
from ops.procs import claim_data_dir
from shared.contract.errors import ConvmeshError
from shared.kafka.admin import ApplyReport
from shared.runtime.settings import SERVICES, Settings


def settings(tmp_path: Path, base: int = 7100) -> Settings:
    return Settings.from_env(
        env={"CONVMESH_DATA_DIR": str(tmp_path), "CONVMESH_WEB_PORT_BASE": str(base)}
    )


def test_known_workers_include_worker_0_and_pid_files(tmp_path: Path) -> None:
    s = settings(tmp_path)
    mesh.run_dir(s).mkdir(parents=True)
    for name in ("dedupe-2.pid", "identity_match-1.pid", "stray.pid", "ingest-x.pid"):
        (mesh.run_dir(s) / name).write_text("{}")
    workers = mesh.known_workers(s)
    assert workers[: len(SERVICES)] != []
    assert set(workers) == {(n, 0) for n in SERVICES} | {("dedupe", 2), ("identity_match", 1)}
    assert workers.index(("dedupe", 2)) < workers.index(("identity_match", 0))


def test_worker_paths_and_urls(tmp_path: Path) -> None:
    s = settings(tmp_path, base=7300)
    assert mesh.worker_url(s, "attribute", 1) == "http://127.0.0.1:7331"
    assert mesh.worker_pid_path(s, "ingest", 0) == tmp_path / "run" / "ingest-0.pid"
    assert mesh.worker_log_path(s, "ingest", 0) == tmp_path / "logs" / "ingest-0.log"


def test_status_of_a_mesh_that_never_ran(tmp_path: Path) -> None:
    workers = mesh.status(settings(tmp_path, base=7900))
    assert [w.name for w in workers] == list(SERVICES)
    assert all(w.state == "stopped" and not w.ready and w.pid is None for w in workers)


def test_stale_pid_file_shows_as_crashed(tmp_path: Path) -> None:
    s = settings(tmp_path, base=7900)
    mesh.run_dir(s).mkdir(parents=True)
    # pid 1 with a start time it never had: certainly not our worker
    mesh.worker_pid_path(s, "dedupe", 0).write_text('{"pid": 1, "start_ticks": 12345}')
    by_name = {w.name: w for w in mesh.status(s)}
    assert by_name["dedupe"].state == "crashed"
    assert by_name["ingest"].state == "stopped"


def test_purge_refuses_a_folder_convmesh_did_not_create(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...")
    with pytest.raises(MeshError, match="refusing"):
        mesh.down(settings(precious), purge=True)
    assert (precious / "thesis.tex").exists()


def test_purge_deletes_a_convmesh_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "services" / "dedupe").mkdir(parents=True)
    (data / mesh.MARKER).touch()
    result = mesh.down(settings(data), purge=True)
    assert result["purged"] and result["workers_stopped"] == 0
    assert not data.exists()


def test_workers_out_of_range_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MeshError, match="between 1 and 10"):
        mesh.up(settings(tmp_path), workers=11)


def test_up_refuses_a_non_empty_folder_convmesh_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConvmeshError, match="not a convmesh data dir"):
        mesh.up(settings(tmp_path))
    assert not (tmp_path / mesh.MARKER).exists()


def test_claim_creates_and_adopts_data_dirs(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh" / "var"
    claim_data_dir(fresh)
    assert (fresh / mesh.MARKER).exists()
    (fresh / "logs").mkdir()
    claim_data_dir(fresh)  # ours already: fine when not empty
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_data_dir(empty)
    assert (empty / mesh.MARKER).exists()


def test_up_starts_nothing_when_a_web_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_topics(*args: object, **kwargs: object) -> ApplyReport:
        return ApplyReport()

    monkeypatch.setattr(mesh, "_ensure_broker", lambda settings: None)
    monkeypatch.setattr(mesh, "apply_topics", no_topics)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        # The port of attribute (base + 30) is taken; ingest and dedupe come first.
        s = settings(tmp_path / "data", base=port - 30)
        with pytest.raises(MeshError, match=f"attribute-0 \\({port}\\)"):
            mesh.up(s)
    assert list(mesh.run_dir(s).glob("*.pid")) == []


def test_scale_refuses_an_unknown_service_or_a_count_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(MeshError, match="unknown service"):
        mesh.scale(settings(tmp_path), "billing", 2)
    with pytest.raises(MeshError, match="between 1 and 10"):
        mesh.scale(settings(tmp_path), "dedupe", 0)


def test_scale_in_forgets_the_pid_files_of_workers_it_stopped(tmp_path: Path, monkeypatch) -> None:
    """Stopped surplus workers leave `status`; nothing is started when enough run."""
    s = settings(tmp_path)
    claim_data_dir(tmp_path)
    mesh.run_dir(s).mkdir(parents=True)
    for worker in (0, 1, 2):
        mesh.worker_pid_path(s, "dedupe", worker).write_text("{}")
    monkeypatch.setattr(mesh, "running_pid", lambda path: 4242)
    stopped = []
    monkeypatch.setattr(mesh, "stop_pids", lambda pids, timeout: stopped.extend(pids) or [])
    monkeypatch.setattr(mesh, "_start_worker", lambda *a: pytest.fail("nothing to start"))
    monkeypatch.setattr(mesh, "_wait_ready", lambda *a: None)
    result = mesh.scale(s, "dedupe", 1)
    assert result["stopped"] == [1, 2] and result["started"] == [] and stopped == [4242, 4242]
    assert [w for n, w in mesh.known_workers(s) if n == "dedupe"] == [0]


def test_stop_workers_reports_only_those_that_ran_and_forgets_every_pid_file(
    tmp_path: Path, monkeypatch
) -> None:
    s = settings(tmp_path)
    mesh.run_dir(s).mkdir(parents=True)
    for worker in (0, 1):
        mesh.worker_pid_path(s, "ingest", worker).write_text("{}")
    pids = {0: 4242, 1: None}
    monkeypatch.setattr(mesh, "running_pid", lambda path: pids[int(path.stem.rsplit("-", 1)[1])])
    signalled = []
    monkeypatch.setattr(mesh, "stop_pids", lambda p, timeout: signalled.extend(p) or [])
    stopped, killed = mesh.stop_workers(s, "ingest", [0, 1], 5.0)
    assert (stopped, killed, signalled) == ([0], [], [4242])
    assert not any(mesh.worker_pid_path(s, "ingest", w).exists() for w in (0, 1))
