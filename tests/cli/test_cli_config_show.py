"""`hpcgw config show`: the effective configuration, never a secret."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app

SMTP_PASSWORD = "smtp-Pa55-word-7731"
DB_PASSWORD = "db-Pa55-word-9142"


@pytest.fixture
def secrets_in_environment(monkeypatch: pytest.MonkeyPatch, secret_key: str) -> list[str]:
    monkeypatch.setenv("HPCGW_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("HPCGW_SMTP__USERNAME", "gateway")
    monkeypatch.setenv("HPCGW_SMTP__PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("HPCGW_DATABASE_URL",
                       f"postgresql+psycopg://hpcgw:{DB_PASSWORD}@127.0.0.1:5432/hpcgw")
    return [secret_key, SMTP_PASSWORD, DB_PASSWORD]


def test_config_show_as_toml_masks_every_secret(runner: CliRunner,
                                                secrets_in_environment: list[str]) -> None:
    result = runner.invoke(app, ["config", "show"])

    assert result.exit_code == 0, result.output
    for secret in secrets_in_environment:
        assert secret not in result.output
    shown = tomllib.loads(result.stdout)
    assert shown["secret_key"] == "**********"
    assert shown["smtp"]["password"] == "**********"
    assert shown["smtp"]["username"] == "gateway"
    assert shown["database_url"] == "postgresql+psycopg://hpcgw:***@127.0.0.1:5432/hpcgw"


def test_config_show_as_json_masks_every_secret(runner: CliRunner,
                                                secrets_in_environment: list[str]) -> None:
    result = runner.invoke(app, ["config", "show", "--format", "json"])

    assert result.exit_code == 0, result.output
    for secret in secrets_in_environment:
        assert secret not in result.output
    shown = json.loads(result.stdout)
    assert shown["secret_key"] == "**********"
    assert shown["smtp"]["password"] == "**********"
    assert shown["oidc"] is None


def test_config_show_reads_the_toml_file_and_lets_the_environment_override_it(
    runner: CliRunner, secret_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "hpcgw.toml"
    config.write_text(
        'port = 9001\nlog_level = "DEBUG"\n'
        '[[clusters]]\nname = "local"\nbackend = "local"\n'
        '[[clusters.partitions]]\nname = "cpu"\nmax_time_minutes = 60\n'
        'max_cpus_per_job = 4\nmax_mem_mb_per_job = 4096\n'
        'billing = { cpu = 0.25, mem_gb = 0.0625 }\n'
    )
    monkeypatch.setenv("HPCGW_LOG_LEVEL", "WARNING")

    result = runner.invoke(app, ["--config", str(config), "config", "show"])

    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.stdout)
    assert shown["port"] == 9001
    assert shown["log_level"] == "WARNING"
    assert shown["clusters"][0]["partitions"][0]["max_cpus_per_job"] == 4
    assert secret_key not in result.output
