"""A configuration the gateway refuses ends the command with one clear paragraph and exit 2."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_serve_without_a_secret_key_exits_2_with_a_message_and_no_traceback(
    hpcgw: str, tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")}
    env["HPCGW_DATA_DIR"] = str(tmp_path)

    result = subprocess.run([hpcgw, "serve"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)

    assert result.returncode == 2
    assert "HPCGW_SECRET_KEY must be set" in _one_line(result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "hpcgw.db").exists()  # it stopped before touching anything


@pytest.mark.parametrize("secret", ["changethis", "ChangeMe", "short-but-random-4f9a"])
def test_a_default_or_short_secret_key_is_refused_outside_demo_mode(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("HPCGW_SECRET_KEY", secret)

    result = runner.invoke(app, ["config", "show"])

    assert result.exit_code == 2
    assert "HPCGW_SECRET_KEY must be set" in _one_line(result.stderr)
    assert secret not in result.output  # the refused value is not echoed


def test_an_invalid_setting_names_the_field(runner: CliRunner, secret_key: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCGW_PORT", "eighty")

    result = runner.invoke(app, ["config", "show"])

    assert result.exit_code == 2
    assert "port:" in result.stderr


def test_a_config_file_that_is_not_toml_exits_2(runner: CliRunner, secret_key: str,
                                                tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("port = = 1\n")

    result = runner.invoke(app, ["--config", str(config), "config", "show"])

    assert result.exit_code == 2
    assert f"{config} is not valid TOML" in _one_line(result.stderr)


def test_a_missing_config_file_exits_2(runner: CliRunner, secret_key: str,
                                       tmp_path: Path) -> None:
    result = runner.invoke(app, ["--config", str(tmp_path / "absent.toml"), "config", "show"])

    assert result.exit_code == 2
    # typer's usage box wraps long paths at the console's width: compare without the frame
    assert "absent.toml'doesnotexist" in re.sub(r"[\s│]", "", result.stderr)
