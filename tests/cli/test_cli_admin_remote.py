"""`hpcgw admin` over the API with the person's own login: members, identities (provisioned on
the demo's local cluster), projects, allocations and their adjustments, each audited under the
person's email and refused to a non-admin by the same checks as the API; `--local` on the host
is audited as the operating-system user."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from factories import auth_headers, make_user
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner, Result

from consortium.models import AuditEvent, Member, MemberStatus, Role
from gateway.api.app import create_app
from gateway.cli import admin_mode, operators_admin_app
from gateway.cli.admin_mode import MODE
from gateway.cli.client import Gateway
from gateway.cli.profiles import Kind, Profile
from gateway.db import Database
from gateway.demo import local_cluster
from gateway.jobs.config import JobsSettings
from gateway.settings import Settings

Run = Callable[..., Result]


@pytest.fixture
def api(settings: Settings, fresh_database: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The API on the demo's local cluster (its scheduler built by the app; no tracker)."""
    demo = settings.model_copy(update={"clusters": [local_cluster(tmp_path)],
                                       "jobs": JobsSettings(tracker_in_serve=False)})
    with TestClient(create_app(demo, database=fresh_database)) as client:
        yield client


@pytest.fixture
def as_user(api: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch,
            fresh_database: Database) -> Callable[[str], Run]:
    """as_user(token)(args...): `hpcgw admin ARGS` over the API with that bearer token."""
    monkeypatch.setattr(MODE, "local", MODE.local)  # restored after the test
    monkeypatch.setattr(MODE, "profile", MODE.profile)
    monkeypatch.setenv("COLUMNS", "250")

    def runner(token: str) -> Run:
        @contextmanager
        def to_api(profile_name: str | None) -> Iterator[Gateway]:
            client = Gateway(Profile(url=str(api.base_url), kind=Kind.pat, access_token=token),
                             retries=0)
            client.http = api  # the app in this process; closed by the fixture, not here
            yield client
        monkeypatch.setattr(admin_mode, "gateway", to_api)
        return lambda *args, code=0: _invoke(list(args), code)
    return runner


def _invoke(args: list[str], code: int) -> Result:
    result = CliRunner().invoke(operators_admin_app(), args)  # the quota groups mounted
    assert result.exit_code == code, result.output
    return result


def _token(settings: Settings, database: Database, **user: object) -> str:
    with database.transaction() as session:
        made = make_user(session, **user)  # type: ignore[arg-type]
        return auth_headers(settings, made)["Authorization"].removeprefix("Bearer ")


def test_admin_commands_go_over_the_api_and_the_audit_names_the_person(
        as_user: Callable[[str], Run], api: TestClient, settings: Settings,
        fresh_database: Database) -> None:
    admin = as_user(_token(settings, fresh_database, email="ops@consortium.test", admin=True))
    created = admin("member", "create", "acme", "--name", "ACME", "--kind", "research")
    assert "member acme created (no cluster yet)" in created.output
    added = admin("member", "identity", "add", "acme", "local:acme:acme:local")
    # the demo's local cluster takes the identity; nothing to create in a Slurm database
    assert "local: account acme provisioned" in added.output
    admin("project", "create", "acme", "first", "--name", "First", "--domain", "research")
    assert "first" in admin("project", "list", "acme").output
    granted = admin("allocation", "grant", "acme", "--su", "10", "--ends", "2031-01-01")
    allocation = granted.output.split("#", 1)[1].split(":", 1)[0]
    adjusted = admin("allocation", "adjust", "acme", allocation, "--su", "-2",
                     "--reason", "granted too much")
    assert "adjusted by -2" in adjusted.output
    # the demo's bug: a member onboarded through the API could not submit there
    with fresh_database.transaction() as session:
        acme = session.scalars(select(Member).where(Member.slug == "acme")).one()
        researcher = make_user(session, roles={acme: Role.researcher})
    submitted = api.post("/api/v1/jobs", headers=auth_headers(settings, researcher), json={
        "project": "acme/first", "name": "hello", "script": "#!/bin/sh\necho hello\n",
        "resources": {"partition": "cpu", "time_limit_minutes": 5, "mem_mb": 64}})
    assert submitted.status_code == 201, submitted.text
    assert "acme is suspended" in admin("member", "suspend", "acme").output
    assert "acme is active" in admin("member", "reactivate", "acme").output
    removed = admin("member", "identity", "remove", "acme", "local")
    assert "local: account acme removed" in removed.output
    assert "acme" in admin("member", "list").output

    with fresh_database.transaction(write=False) as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        member = session.scalars(select(Member).where(Member.slug == "acme")).one()
        assert member.status == MemberStatus.active
    admin_events = [e for e in events if e.action != "job.submit"]
    assert [e.action for e in admin_events] == [
        "member.create", "identity.add", "project.create", "allocation.grant", "allocation.adjust",
        "member.suspend", "member.reactivate", "identity.remove"]
    assert {e.actor for e in admin_events} == {"ops@consortium.test"}


def test_a_non_admin_is_refused_by_the_apis_own_checks(
        as_user: Callable[[str], Run], settings: Settings, fresh_database: Database) -> None:
    with fresh_database.transaction() as session:
        from factories import make_member

        acme = make_member(session, "acme")
        user = make_user(session, roles={acme: Role.manager})
        token = auth_headers(settings, user)["Authorization"].removeprefix("Bearer ")
    refused = as_user(token)("member", "suspend", "acme", code=6)
    assert "Forbidden" in refused.output or "admin" in refused.output
    with fresh_database.transaction(write=False) as session:
        denied = session.scalars(select(AuditEvent).where(
            AuditEvent.outcome == "denied")).one()
        assert (denied.action, denied.actor) == ("member.update", user.email)


def test_host_only_commands_ask_for_local(as_user: Callable[[str], Run], settings: Settings,
                                          fresh_database: Database) -> None:
    admin = as_user(_token(settings, fresh_database, admin=True))
    assert "add --local" in admin("user", "list", code=2).output


def test_local_mode_audits_the_operating_system_user(
        fresh_database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MODE, "local", MODE.local)
    for name in [n for n in os.environ if n.startswith("HPCGW_") and n != "HPCGW_TEST_DB"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HPCGW_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("HPCGW_SECRET_KEY", "cli-test-secret-" + "z" * 32)
    _invoke(["--local", "member", "create", "beta", "--name", "Beta", "--kind", "company"], 0)
    _invoke(["--local", "project", "create", "beta", "p1", "--name", "P1", "--domain",
             "health"], 0)
    with fresh_database.transaction(write=False) as session:
        actors = {e.actor for e in session.scalars(select(AuditEvent))}
    assert actors == {f"os:{getpass.getuser()}"}
