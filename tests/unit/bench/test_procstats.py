"""Finding the local broker's process (bench/procstats.py), on a /proc made in a folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import procstats

LISTEN_9092 = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
    "  timeout inode\n"
    "   0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
    "     0        0 4711 1 0 100 0 0 10 0\n"
)


def fake_proc(
    root: Path, sockets_of: dict[int, list[int]], closed: int = 0, main: str = "kafka.Kafka"
) -> Path:
    """``closed`` fds per process, made first, that cannot be read (as one closed
    between the listing and the reading): regular files, where readlink fails."""
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(LISTEN_9092)
    (root / "self").mkdir()  # not a pid: skipped
    for pid, inodes in sockets_of.items():
        fds = root / str(pid) / "fd"
        fds.mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(f"/usr/bin/java\0-cp\0libs/*\0{main}\0".encode())
        for n in range(100, 100 + closed):
            (fds / str(n)).write_text("")
        (fds / "0").symlink_to("/dev/null")
        for n, inode in enumerate(inodes, start=3):
            os.symlink(f"socket:[{inode}]", fds / str(n))
    return root


def test_the_pid_is_the_owner_of_the_listen_socket(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {100: [12], 200: [13, 4711]})
    assert procstats.listening_pid(9092, proc) == 200


def test_an_fd_closed_while_listed_does_not_hide_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker's connections come and go while its fds are read (run 07:38: no pid)."""
    proc = fake_proc(tmp_path, {200: [4711]}, closed=3)
    listed = Path.iterdir

    def socket_last(path: Path) -> Iterator[Path]:
        return iter(sorted(listed(path), key=lambda p: p.name == "3"))

    monkeypatch.setattr(Path, "iterdir", socket_last)
    assert procstats.listening_pid(9092, proc) == 200


def test_no_pid_when_nothing_listens_on_the_port(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {200: [4711]})
    assert procstats.listening_pid(9093, proc) is None


def test_no_pid_when_no_visible_process_owns_the_socket(tmp_path: Path) -> None:
    """A broker of another user (or in another pid namespace): its socket is listed,
    no process this one can see holds it."""
    proc = fake_proc(tmp_path, {100: [12]})
    assert procstats.listening_pid(9092, proc) is None


def test_a_remote_broker_has_no_pid_here(tmp_path: Path) -> None:
    """A broker listens here on the same port; the bootstrap names other machines."""
    proc = fake_proc(tmp_path, {200: [4711]})
    bootstrap = "kafka-1.example.com:9092,kafka-2.example.com:9092"
    assert procstats.broker_pids(bootstrap, proc) == []


@pytest.mark.parametrize(
    "bootstrap",
    ["127.0.0.1:9092", "localhost:9092", "[::1]:9092", "kafka-1.example.com:9092, localhost:9092"],
)
def test_a_local_bootstrap_server_is_the_broker(tmp_path: Path, bootstrap: str) -> None:
    proc = fake_proc(tmp_path, {200: [4711]})
    assert procstats.broker_pids(bootstrap, proc) == [("broker", 200)]


def test_a_proxy_on_the_port_is_not_the_broker(tmp_path: Path) -> None:
    """docker-proxy holds the port of a broker in a container: its CPU is not the broker's."""
    proc = fake_proc(tmp_path, {200: [4711]}, main="docker-proxy")
    assert procstats.broker_pids("127.0.0.1:9092", proc) == []


def test_disk_writes_add_up_a_services_workers_in_mib() -> None:
    pids = [("attribute", 11), ("attribute", 12), ("dedupe", 13)]
    before = {11: 0, 12: 2**20, 13: 5 * 2**20}
    after = {11: 3 * 2**20, 12: 2 * 2**20, 13: 5 * 2**20}
    assert procstats.disk_write_mib(pids, before, after) == {"attribute": 4.0, "dedupe": 0.0}


def test_a_worker_gone_before_the_second_reading_counts_no_disk_writes() -> None:
    pids = [("dedupe", 13)]
    assert procstats.disk_write_mib(pids, {13: 5 * 2**20}, {13: 0}) == {"dedupe": 0.0}
