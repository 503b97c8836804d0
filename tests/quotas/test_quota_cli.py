"""`hpcgw admin allocation grant`, `ledger verify`, `quotas sync` and `quotas drift`, each on
a database of its own built from the settings (HPCGW_* variables and a TOML file)."""

from __future__ import annotations

import getpass
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
from factories import make_member, make_project, wide_cli_tables
from quota_helpers import give, hold_hours, settle_hours
from sqlalchemy import select, text
from typer.testing import CliRunner

from consortium.base import utcnow
from gateway.cli.quotas import allocation_app, ledger_app, quotas_app
from gateway.db import Database
from quotas.models import Alert, Allocation, AllocationKind, AllocationState

CONFIG = """
[[clusters]]
name = "local"
backend = "local"
local_root = "{root}"

[[clusters.partitions]]
name = "gpu"
max_time_minutes = 60
max_cpus_per_job = 4
max_gpus_per_job = 1
max_mem_mb_per_job = 4096
billing = {{ cpu = 0.25, mem_gb = 0.0625 }}
"""


@pytest.fixture
def env(fresh_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    config = tmp_path / "hpcgw.toml"
    config.write_text(CONFIG.format(root=tmp_path / "jobs"))
    monkeypatch.setenv("HPCGW_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("HPCGW_SECRET_KEY", secrets.token_urlsafe(40))
    monkeypatch.setenv("HPCGW_CONFIG", str(config))
    wide_cli_tables(monkeypatch, 200)
    return fresh_database


def test_grant_creates_an_earmarked_allocation_and_says_what_it_did(env: Database) -> None:
    with env.transaction() as session:
        member = make_member(session, "acme")
        make_project(session, member, "vision")
    result = CliRunner().invoke(allocation_app, [
        "grant", "acme", "--su", "12.5", "--ends", "2031-01-01", "--starts", "2030-01-01",
        "--kind", "supplement", "--project", "vision", "--note", "call 2030"])
    assert result.exit_code == 0, result.output
    assert ("12.500 SU (supplement) for acme, 2030-01-01 00:00 to 2031-01-01 00:00 UTC"
            in result.output)
    with env.session() as session:
        [allocation] = session.scalars(select(Allocation)).all()
        assert (allocation.granted_msu, allocation.kind, allocation.note, allocation.created_by) \
            == (12_500, AllocationKind.supplement, "call 2030", f"os:{getpass.getuser()}")
        assert allocation.project_id is not None


def test_grant_refuses_unknown_members_and_a_fourth_decimal(env: Database) -> None:
    with env.transaction() as session:
        make_member(session, "acme")
    runner = CliRunner()
    unknown = runner.invoke(allocation_app, ["grant", "nope", "--su", "1", "--ends", "2031-01-01"])
    assert unknown.exit_code == 1 and "no member 'nope'" in unknown.output
    precise = runner.invoke(allocation_app, ["grant", "acme", "--su", "1.0001",
                                             "--ends", "2031-01-01"])
    assert precise.exit_code == 1 and "three decimals" in precise.output


def test_verify_passes_on_clean_books_and_fails_on_a_tampered_balance(env: Database) -> None:
    with env.transaction() as session:
        member = make_member(session)
        allocation_id = give(session, member, 10).id
        hold_hours(session, member, "j1", 3)
        settle_hours(session, "j1", 2)
    clean = CliRunner().invoke(ledger_app, ["verify"])
    assert clean.exit_code == 0 and "the books balance: 4 entries" in clean.output
    with env.transaction() as session:
        session.execute(text("UPDATE allocations SET charged_msu = 0 WHERE id = :id"),
                        {"id": allocation_id})
    tampered = CliRunner().invoke(ledger_app, ["verify"])
    assert tampered.exit_code == 1
    assert "charged_msu" in tampered.output and "-2.000 SU" in tampered.output
    assert "1 balance(s) differ from the ledger" in tampered.output


def test_sync_closes_ended_periods_and_fires_alerts(env: Database) -> None:
    now = utcnow()
    with env.transaction() as session:
        member = make_member(session)
        ended = give(session, member, 10, starts_at=now - timedelta(days=30),
                     ends_at=now + timedelta(hours=1))
        hold_hours(session, member, "j1", 6)
        settle_hours(session, "j1", 6)
        session.execute(text("UPDATE allocations SET ends_at = :at WHERE id = :id"),
                        {"at": (now - timedelta(minutes=1)).replace(tzinfo=None).isoformat(" ")
                         if env.dialect == "sqlite" else now - timedelta(minutes=1),
                         "id": ended.id})
    result = CliRunner().invoke(quotas_app, ["sync"])
    assert result.exit_code == 0, result.output
    assert f"1 allocation(s) moved on (#{ended.id} closed)" in result.output
    with env.session() as session:
        allocation = session.get(Allocation, ended.id)
        assert allocation is not None and allocation.state == AllocationState.closed
        assert allocation.expired_msu == 4000
        assert session.scalars(select(Alert.kind)).all() == ["used_50"]


def test_drift_reports_nothing_for_clusters_without_slurm_accounting(env: Database) -> None:
    with env.transaction() as session:
        give(session, make_member(session), 10)
    result = CliRunner().invoke(quotas_app, ["drift"])
    assert result.exit_code == 0, result.output
    assert "nothing to compare" in result.output
