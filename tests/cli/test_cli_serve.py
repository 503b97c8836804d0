"""`hpcgw serve` as an operator runs it: migrate first, then serve, with several workers."""

from __future__ import annotations

import gc
import secrets
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

    from gateway.cli.serve import settled

    gc.unfreeze()
    try:
        app = settled(FastAPI())
        assert isinstance(app, FastAPI)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
