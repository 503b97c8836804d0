"""`hpcgw tracker`, and how `hpcgw submit` reads times and sizes (the client's commands against a
live gateway: tests/cli/test_cli_client_*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gateway import migrations
from gateway.cli import tracker
from gateway.cli.submit import mebibytes, minutes


@pytest.mark.parametrize(("text", "expected"), [
    ("90", 90), ("2h", 120), ("1h30m", 90), ("1d", 1440), ("02:00:00", 120),
    ("1-00:00:00", 1440), ("00:00:30", 1), ("45:00", 45), ("2-00", 2880)])
def test_time_limits_are_read_as_sbatch_and_people_write_them(text: str, expected: int) -> None:
    assert minutes(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("4096", 4096), ("512M", 512), ("16G", 16384),
                                                ("1T", 1024 * 1024), ("1536K", 2)])
def test_memory_sizes_are_read_in_mib_as_sbatch_reads_them(text: str, expected: int) -> None:
    assert mebibytes(text) == expected


def test_bad_durations_and_sizes_are_refused_with_sbatchs_formats() -> None:
    for bad in ("soon", "2x", "", "0"):
        with pytest.raises(typer.BadParameter):
            minutes(bad)
    with pytest.raises(typer.BadParameter, match="K, M, G or T"):
        mebibytes("2GiB")


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
    monkeypatch.setattr(tracker, "configure_logging", lambda *args: None)
    app = typer.Typer()
    app.command()(tracker.tracker_command)
    result = CliRunner().invoke(app, ["--once"])
    assert result.exit_code == 0, result.output
    assert "laptop: 0 job(s) followed, 0 change(s)" in result.output
