"""`hpcgw db upgrade|check`, and `hpcgw serve` refusing a schema that is not at head."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from gateway.cli import app
from gateway.models import metadata


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def empty_database(empty_database_url: str, monkeypatch: pytest.MonkeyPatch,
                   secret_key: str) -> str:
    monkeypatch.setenv("HPCGW_DATABASE_URL", empty_database_url)
    return empty_database_url


def test_db_upgrade_creates_every_table_of_the_models(runner: CliRunner,
                                                      empty_database: str) -> None:
    result = runner.invoke(app, ["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert _tables(empty_database) == set(metadata.tables) | {"alembic_version"}


def test_db_check_passes_after_upgrade_and_upgrade_twice_changes_nothing(
    runner: CliRunner, empty_database: str
) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    again = runner.invoke(app, ["db", "upgrade"])
    check = runner.invoke(app, ["db", "check"])

    assert again.exit_code == 0, again.output
    assert check.exit_code == 0, check.output
    assert "no difference" in check.stdout


def test_db_check_fails_on_a_database_that_is_not_at_head(runner: CliRunner,
                                                          empty_database: str) -> None:
    result = runner.invoke(app, ["db", "check"])

    assert result.exit_code == 1
    assert "not up to date" in result.stderr


def test_db_upgrade_creates_the_data_directory_of_the_embedded_sqlite(
    runner: CliRunner, secret_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "var" / "hpcgw"
    monkeypatch.setenv("HPCGW_DATA_DIR", str(data_dir))

    result = runner.invoke(app, ["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert "members" in _tables(f"sqlite:///{data_dir / 'hpcgw.db'}")


def test_serve_refuses_a_database_whose_migrations_are_pending(runner: CliRunner,
                                                                empty_database: str) -> None:
    result = runner.invoke(app, ["serve", "--port", "1"])

    assert result.exit_code == 1
    assert "run `hpcgw db upgrade`" in result.stderr


def test_serve_refuses_a_missing_sqlite_database_without_creating_it(
    runner: CliRunner, secret_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPCGW_DATA_DIR", str(tmp_path))

    result = runner.invoke(app, ["serve", "--port", "1"])

    assert result.exit_code == 1
    assert "run `hpcgw db upgrade`" in result.stderr
    assert not (tmp_path / "hpcgw.db").exists()


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "check"], ["serve"]])
def test_an_unreachable_database_is_one_line_without_its_password(
    runner: CliRunner, secret_key: str, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("HPCGW_DATABASE_URL",
                       "postgresql+psycopg://hpcgw:db-Pa55-3317@127.0.0.1:1/hpcgw")

    result = runner.invoke(app, command)

    assert result.exit_code == 1
    assert "Connection refused" in result.stderr
    assert "db-Pa55-3317" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an uncaught error
