"""`hpcgw serve` as an operator runs it: migrate first, then serve, with several workers."""

from __future__ import annotations

import gc
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from typer.testing import CliRunner

from gateway.cli import app

if TYPE_CHECKING:
    from conftest import StartServer


def test_serve_with_two_workers_answers_once_the_database_is_upgraded(
    runner: CliRunner, start_server: StartServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"HPCGW_SECRET_KEY": secrets.token_urlsafe(48), "HPCGW_DATA_DIR": str(tmp_path)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0

    server = start_server(["serve", "--workers", "2"], **env)
    try:
        server.wait_healthy()
        # each worker answers from the same database: both see the schema
        for _ in range(4):
            assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
    finally:
        server.stop()


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
