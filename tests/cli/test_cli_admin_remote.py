"""`hpcgw admin` over the API with the person's own login: members, identities (provisioned on
the demo's local cluster), projects, allocations and their adjustments, invitations, user
accounts, the audit trail and the ledger's verification, each change audited under the
person's email and refused to a non-admin by the same checks as the API; only `quotas
sync|drift` ask for the host. `--local` on the host is audited as the operating-system user,
and makes the first administrator."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from factories import auth_headers, make_member, make_project, make_user, wide_cli_tables
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner, Result

from consortium.models import AuditEvent, Member, MemberStatus, Role, User
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
    wide_cli_tables(monkeypatch, 250)

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
        acme = make_member(session, "acme")
        user = make_user(session, roles={acme: Role.manager})
        token = auth_headers(settings, user)["Authorization"].removeprefix("Bearer ")
    refused = as_user(token)("member", "suspend", "acme", code=6)
    assert "Forbidden" in refused.output or "admin" in refused.output
    with fresh_database.transaction(write=False) as session:
        denied = session.scalars(select(AuditEvent).where(
            AuditEvent.outcome == "denied")).one()
        assert (denied.action, denied.actor) == ("member.update", user.email)


def _actors(database: Database, *actions: str) -> list[tuple[str, str]]:
    with database.transaction(write=False) as session:
        return [(e.action, e.actor) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action.in_(actions)).order_by(AuditEvent.id))]


def test_member_show_and_invite_over_the_api(as_user: Callable[[str], Run], api: TestClient,
                                             settings: Settings,
                                             fresh_database: Database) -> None:
    with fresh_database.transaction() as session:
        acme = make_member(session, "acme")
        make_project(session, acme, "soil")
        make_user(session, email="boss@acme.test", roles={acme: Role.manager})
    admin = as_user(_token(settings, fresh_database, email="ops@consortium.test", admin=True))
    shown = admin("member", "show", "acme").output
    assert "Member acme (acme, company, active)" in shown
    assert "boss@acme.test" in shown and "manager" in shown and "soil" in shown
    assert "no member 'nope'" in admin("member", "show", "nope", code=4).output
    invited = admin("invite", "acme", "ana@acme.test", "--role", "researcher").output
    # no SMTP configured here: the link to pass on, with the invitation's single-use token
    assert "for ana@acme.test, valid once until" in invited
    token = invited.split("/ui/invitations/", 1)[1].strip()
    accepted = api.post(f"/api/v1/invitations/{token}/accept",
                        json={"name": "Ana", "password": "Tuna-Lantern-Quiet-Orbit-77"})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["membership"]["role"] == "researcher"
    assert _actors(fresh_database, "invitation.create") == [
        ("invitation.create", "ops@consortium.test")]


def test_user_accounts_over_the_api(as_user: Callable[[str], Run], settings: Settings,
                                    fresh_database: Database) -> None:
    admin = as_user(_token(settings, fresh_database, email="ops@consortium.test", admin=True))
    created = admin("user", "create", "bob@consortium.test", "--name", "Bob", "--password",
                    "Tuna-Lantern-Quiet-Orbit-77").output
    assert "user bob@consortium.test created (id " in created
    assert "administrator" not in created
    assert "Bob" in admin("user", "list").output
    assert "is an administrator" in admin("user", "set-admin", "bob@consortium.test").output
    revoked = admin("user", "set-admin", "bob@consortium.test", "--revoke").output
    assert "is not an administrator" in revoked
    assert "is deactivated" in admin("user", "deactivate", "bob@consortium.test").output
    assert "no user 'eve@x.test'" in admin("user", "deactivate", "eve@x.test", code=4).output
    with fresh_database.transaction(write=False) as session:
        bob = session.scalars(select(User).where(User.email == "bob@consortium.test")).one()
        assert (bob.is_admin, bob.is_active) == (False, False)
    assert _actors(fresh_database, "user.create", "user.set_admin", "user.deactivate") == [
        ("user.create", "ops@consortium.test"), ("user.set_admin", "ops@consortium.test"),
        ("user.set_admin", "ops@consortium.test"), ("user.deactivate", "ops@consortium.test")]
    # no administrator can be made over the API by someone who is not one (the first one is
    # made with --local on the host)
    nobody = as_user(_token(settings, fresh_database, email="joe@consortium.test"))
    nobody("user", "create", "root@consortium.test", "--name", "Root", "--admin",
           "--password", "Tuna-Lantern-Quiet-Orbit-77", code=6)
    assert _actors(fresh_database, "user.create")[-1] == ("user.create", "joe@consortium.test")


def test_audit_and_ledger_verify_over_the_api(as_user: Callable[[str], Run], settings: Settings,
                                              fresh_database: Database) -> None:
    admin = as_user(_token(settings, fresh_database, email="ops@consortium.test", admin=True))
    admin("member", "create", "acme", "--name", "ACME", "--kind", "research")
    admin("allocation", "grant", "acme", "--su", "10", "--ends", "2031-01-01")
    trail = admin("audit", "--action", "member.create", "--since", "2020-01-01").output
    assert "ops@consortium.test" in trail and "member.create" in trail and "acme" in trail
    assert "allocation.grant" not in trail
    assert "allocation.grant" in admin("audit", "--member", "acme").output
    verified = admin("ledger", "verify").output
    assert "the books balance: 1 entries, every balance matches them" in verified
    # reading the trail and the books is for administrators only
    with fresh_database.transaction() as session:
        acme = session.scalars(select(Member).where(Member.slug == "acme")).one()
        manager = make_user(session, roles={acme: Role.manager})
        token = auth_headers(settings, manager)["Authorization"].removeprefix("Bearer ")
    as_user(token)("ledger", "verify", code=6)
    as_user(token)("audit", code=6)


def test_only_the_hosts_periodic_work_asks_for_local(
        as_user: Callable[[str], Run], settings: Settings, fresh_database: Database) -> None:
    admin = as_user(_token(settings, fresh_database, admin=True))
    for command in (["quotas", "sync"], ["quotas", "drift"]):
        assert "add --local" in admin(*command, code=2).output


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
    # bootstrapping: the first administrator, with no one to log in as yet
    first = _invoke(["--local", "user", "create", "ops@beta.test", "--name", "Ops", "--admin",
                     "--password", "Tuna-Lantern-Quiet-Orbit-77"], 0)
    assert "administrator" in first.output
    with fresh_database.transaction(write=False) as session:
        actors = {e.actor for e in session.scalars(select(AuditEvent))}
        assert session.scalars(select(User).where(User.is_admin)).one().email == "ops@beta.test"
    assert actors == {f"os:{getpass.getuser()}"}
