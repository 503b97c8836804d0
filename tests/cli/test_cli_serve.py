"""`hpcgw serve` as an operator runs it: migrate first, then serve, with several workers."""

from __future__ import annotations

import gc
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest
from server_process import ServerProcess, pid_gone
from typer.testing import CliRunner

from gateway.api.worker import GRACEFUL_SHUTDOWN_SECONDS
from gateway.cli import app

if TYPE_CHECKING:
    from conftest import StartServer


@pytest.fixture
def two_workers(runner: CliRunner, start_server: StartServer, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    """`hpcgw serve --workers 2` on a database `hpcgw db upgrade` made, answering; stopped
    gracefully after the test."""
    env = {"HPCGW_SECRET_KEY": secrets.token_urlsafe(48), "HPCGW_DATA_DIR": str(tmp_path)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    server = start_server(["serve", "--workers", "2"], **env)
    try:
        server.wait_healthy()
        yield server
    finally:
        if server.process.poll() != -signal.SIGKILL:  # a test may kill it on purpose
            server.stop()


def test_serve_with_two_workers_answers_once_the_database_is_upgraded(
        two_workers: ServerProcess) -> None:
    # each worker answers from the same database: both see the schema
    for _ in range(4):
        assert httpx.get(f"{two_workers.url}/readyz", timeout=5).status_code == 200


def _workers(pid: int) -> list[int]:
    return [int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _sockets_by_worker(pids: list[int], port: int, state: str) -> dict[int, int]:
    """How many of the server's sockets on `port` in `state` (/proc/net/tcp: 01 established,
    0A listening) each worker holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            inodes.add(fields[9])
    held = {}
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        links = [str(fd.readlink()) for fd in fds.iterdir() if fd.name.isdigit()]
        held[pid] = sum(link.startswith("socket:[") and link[8:-1] in inodes for link in links)
    return held


def test_workers_accept_on_sockets_of_their_own_share_a_burst_and_one_that_dies_is_replaced(
        two_workers: ServerProcess) -> None:
    """uvicorn's workers shared one socket, and one of them could take a whole burst of
    keep-alive clients while the other idled: each worker now listens on its own socket
    (SO_REUSEPORT), and the kernel spreads the connections."""
    pids = _workers(two_workers.process.pid)
    assert len(pids) == 2
    port = urlsplit(two_workers.url).port
    assert port is not None
    assert _sockets_by_worker(pids, port, "0A") == dict.fromkeys(pids, 1)
    listening = [line for line in Path("/proc/net/tcp").read_text().splitlines()
                 if f":{port:04X} " in line and line.split()[3] == "0A"]
    assert len(listening) == 2  # one socket each, not one shared
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
    try:
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert all(client.recv(4096).startswith(b"HTTP/1.1 200") for client in clients)
        held = _sockets_by_worker(pids, port, "01")
        assert sum(held.values()) >= 40 and min(held.values()) >= 8, held
    finally:
        for client in clients:
            client.close()

    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(replaced := _workers(two_workers.process.pid)) < 2 or pids[0] in replaced:
        assert time.monotonic() < deadline, two_workers.output()
        time.sleep(0.2)
    two_workers.wait_healthy()
    assert all(httpx.get(f"{two_workers.url}/healthz", timeout=5).status_code == 200
               for _ in range(20))


def test_workers_end_with_their_supervisor_however_it_ends(two_workers: ServerProcess) -> None:
    """A worker left alone would go on serving on its socket, with nobody to stop or replace
    it."""
    pids = _workers(two_workers.process.pid)
    assert len(pids) == 2
    two_workers.process.kill()  # SIGKILL: no chance to stop its workers
    two_workers.process.wait(timeout=10)
    deadline = time.monotonic() + GRACEFUL_SHUTDOWN_SECONDS
    while not all(pid_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if not pid_gone(pid)]
        time.sleep(0.2)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{two_workers.url}/healthz", timeout=5)


def test_the_served_app_is_built_with_startup_objects_frozen_out_of_the_collector() -> None:
    from fastapi import FastAPI

    from gateway.api.worker import settled

    gc.unfreeze()
    try:
        app = settled(FastAPI())
        assert isinstance(app, FastAPI)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_worker_process_imports_neither_the_command_line_nor_alembic() -> None:
    """What each worker of `hpcgw serve --workers N` imports (issue 10's memory floor)."""
    probe = ("import sys, gateway.api.worker; "
             "print(sorted(m for m in ('alembic', 'typer') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                           text=True)
    assert found.stdout.strip() == "[]"
