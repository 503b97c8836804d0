"""`hpcgw clusters check`: one row per configured cluster, exit 1 when any is down."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app

ROOT = Path(__file__).resolve().parents[2]

LOCAL = """
[[clusters]]
name = "laptop"
backend = "local"
local_root = "{root}"
[[clusters.partitions]]
name = "cpu"
max_time_minutes = 60
max_cpus_per_job = 2
max_mem_mb_per_job = 2048
billing = {{ cpu = 0.25, mem_gb = 0.0625 }}
"""

UNREACHABLE = """
[[clusters]]
name = "nowhere"
backend = "slurm_ssh"
host = "127.0.0.1"
port = {port}
known_hosts = "{known_hosts}"
connect_timeout = 2.0
command_timeout = 2.0
[clusters.admin]
unix_user = "hpcgw_admin"
key_file = "{key}"
[[clusters.partitions]]
name = "debug"
max_time_minutes = 60
max_cpus_per_job = 2
max_mem_mb_per_job = 2048
billing = {{ cpu = 0.25, mem_gb = 0.0625 }}
"""


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hpcgw.toml"
    path.write_text(text)
    return path


def test_a_local_cluster_is_reported_up(runner: CliRunner, secret_key: str,
                                        tmp_path: Path) -> None:
    config = _config(tmp_path, LOCAL.format(root=tmp_path / "local"))

    result = runner.invoke(app, ["--config", str(config), "clusters", "check"])

    assert result.exit_code == 0, result.output
    assert "laptop" in result.stdout
    assert "up" in result.stdout


def test_an_unreachable_cluster_is_reported_down_with_exit_1(runner: CliRunner, secret_key: str,
                                                              tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "key").write_text("")
    config = _config(tmp_path, LOCAL.format(root=tmp_path / "local") + UNREACHABLE.format(
        port=_closed_port(), known_hosts=tmp_path / "known_hosts", key=tmp_path / "key"))

    result = runner.invoke(app, ["--config", str(config), "clusters", "check"])

    assert result.exit_code == 1, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith("│") and line.split()[1] in ("laptop", "nowhere")}
    assert "down" in rows["nowhere"]
    assert " up " in rows["laptop"]


@pytest.mark.slurm
def test_the_slurm_test_cluster_is_reported_up(runner: CliRunner, secret_key: str) -> None:
    config = ROOT / "docs/examples/testcluster.toml"

    result = runner.invoke(app, ["--config", str(config), "clusters", "check"])

    assert result.exit_code == 0, result.output
    assert "hpcgwtest" in result.stdout
