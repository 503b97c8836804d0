"""The CLI reads its settings from the environment: each test starts from an empty HPCGW_*.
`start_server` runs `hpcgw serve|demo` as a real process on a free port."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("HPCGW_") and n != "HPCGW_TEST_DB"]:
        monkeypatch.delenv(name)
    # set then delete: the CLI's --config writes HPCGW_CONFIG, and the test's end undoes it
    monkeypatch.setenv("HPCGW_CONFIG", "")
    monkeypatch.delenv("HPCGW_CONFIG")
    yield


@pytest.fixture
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = "signing-key-" + secrets.token_urlsafe(32)
    monkeypatch.setenv("HPCGW_SECRET_KEY", key)
    return key


@pytest.fixture(scope="session")
def hpcgw() -> str:
    """The console script of this environment (`hpcgw = gateway.cli:app`)."""
    path = shutil.which("hpcgw", path=str(Path(sys.executable).parent))
    assert path, "hpcgw is not installed in this environment: pip install -e ."
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """`hpcgw ARGS --port P` with its output in a log file; bounded waits only."""

    def __init__(self, hpcgw: str, args: list[str], env: dict[str, str], log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen([hpcgw, *args, "--port", str(port)], env=env,
                                            stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited early:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not healthy within {START_TIMEOUT} s:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM, then a graceful shutdown: uvicorn finishes, then re-raises the signal."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            raise
        assert status in (0, -signal.SIGTERM), self.output()
        assert "Application shutdown complete" in self.output(), self.output()


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(hpcgw: str, tmp_path: Path) -> Iterator[StartServer]:
    """start_server(args, **env): a running hpcgw; whatever is still running is killed after."""
    started: list[ServerProcess] = []

    def start(args: list[str], **env: str) -> ServerProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")}
        server = ServerProcess(hpcgw, args, base | env, tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=STOP_TIMEOUT)
