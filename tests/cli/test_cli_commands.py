"""The command tree: every group of the README is reachable from `hpcgw`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gateway.cli import app


@pytest.mark.parametrize(("path", "commands"), [
    ([], ["serve", "tracker", "demo", "jobs", "submit", "db", "config", "clusters", "admin"]),
    (["db"], ["upgrade", "check"]),
    (["admin"], ["member", "user", "invite", "audit", "allocation", "ledger", "quotas"]),
])
def test_every_command_group_is_mounted(runner: CliRunner, path: list[str],
                                        commands: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])

    assert result.exit_code == 0, result.output
    listed = {line.split()[1] for line in result.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 2}
    assert set(commands) <= listed
