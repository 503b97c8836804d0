"""The CLI reads its settings from the environment: each test starts from an empty HPCGW_*.
`start_server` runs `hpcgw serve|demo` as a real process on a free port."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_process import STOP_TIMEOUT, ServerProcess
from typer.testing import CliRunner


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
