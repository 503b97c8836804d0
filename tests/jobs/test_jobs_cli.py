"""`hpcgw tracker` and the `hpcgw jobs` client."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import CLUSTER, World
from typer.testing import CliRunner

from consortium.models import User
from gateway import migrations
from gateway.api.app import create_app
from gateway.cli import jobs as cli
from gateway.db import Database
from gateway.settings import Settings

Headers = Callable[[User], dict[str, str]]


@pytest.mark.parametrize(("text", "expected"), [
    ("90", 90), ("2h", 120), ("1h30m", 90), ("1d", 1440), ("02:00:00", 120),
    ("1-00:00:00", 1440), ("00:00:30", 1), ("45:00", 45)])
def test_time_limits_are_read_as_people_write_them(text: str, expected: int) -> None:
    assert cli.minutes(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("4096", 4096), ("512M", 512), ("16G", 16384),
                                                ("2GiB", 2048), ("1T", 1024 * 1024)])
def test_memory_sizes_are_read_in_mib(text: str, expected: int) -> None:
    assert cli.megabytes(text) == expected


def test_bad_durations_and_sizes_are_refused() -> None:
    for bad in ("soon", "2x", ""):
        with pytest.raises(typer.BadParameter):
            cli.minutes(bad)
    with pytest.raises(typer.BadParameter):
        cli.megabytes("lots")


def test_the_tracker_runs_one_cycle_per_cluster_and_reports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hpcgw.toml"
    config.write_text(f"""
[[clusters]]
name = "laptop"
backend = "local"
local_root = "{tmp_path / 'cluster'}"
[[clusters.partitions]]
name = "cpu"
max_time_minutes = 60
max_cpus_per_job = 2
max_mem_mb_per_job = 2048
billing = {{ cpu = 0.25, mem_gb = 0.0625 }}
""")
    url = f"sqlite:///{tmp_path / 'hpcgw.db'}"
    migrations.upgrade(url)
    for name, value in {"HPCGW_CONFIG": str(config), "HPCGW_DATABASE_URL": url,
                        "HPCGW_SECRET_KEY": "k" * 40}.items():
        monkeypatch.setenv(name, value)
    # logging set up for a terminal would keep writing to the runner's closed stream
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    app = typer.Typer()
    app.command()(cli.tracker_command)
    result = CliRunner().invoke(app, ["--once"])
    assert result.exit_code == 0, result.output
    assert "laptop: 0 job(s) followed, 0 change(s)" in result.output


def printed(output: str) -> dict[str, Any]:
    """The JSON document a command printed (the in-process app's log lines come before it)."""
    return dict(json.loads(output[output.index("{\n"):]))


def test_the_client_submits_lists_shows_and_cancels(
        *, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: World, as_: Headers,
        settings: Settings, database: Database, fake: FakeScheduler) -> None:
    app = create_app(settings, database=database, schedulers={CLUSTER: fake})
    monkeypatch.setattr(cli, "_client",
                        lambda: TestClient(app, headers=as_(world.researcher)))
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/bash\necho hi\n")
    runner = CliRunner()
    submitted = runner.invoke(cli.jobs_app, [
        "submit", str(script), "--project", "acme/vision", "--time", "30m", "--mem", "1G",
        "--idempotency-key", "cli-1"])
    assert submitted.exit_code == 0, submitted.output
    job = printed(submitted.output)
    assert job["name"] == "train" and job["resources"]["time_limit_minutes"] == 30
    again = runner.invoke(cli.jobs_app, [
        "submit", str(script), "--project", "acme/vision", "--time", "30m", "--mem", "1G",
        "--idempotency-key", "cli-1"])
    assert printed(again.output)["id"] == job["id"] and fake.calls["submit"] == 1
    listed = runner.invoke(cli.jobs_app, ["list"])
    assert job["id"] in listed.output and "pending" in listed.output
    assert printed(runner.invoke(cli.jobs_app, ["show", job["id"]]).output)["id"] == job["id"]
    cancelled = runner.invoke(cli.jobs_app, ["cancel", job["id"]])
    assert "cancel requested" in cancelled.output
    refused = runner.invoke(cli.jobs_app, [
        "submit", str(script), "--project", "acme/vision", "--time", "9h"])
    assert refused.exit_code == 1 and "422" in refused.output
