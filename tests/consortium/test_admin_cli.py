"""`hpcgw admin`: the same service as the API, on the configured database, audited as "cli"."""

from __future__ import annotations

import getpass
import os

import pytest
from factories import wide_cli_tables
from sqlalchemy import select
from typer.testing import CliRunner

from consortium.audit import RequestContext
from consortium.models import AuditEvent, Member, MemberStatus, User
from consortium.passwords import verify_password
from consortium.schemas import InvitationAccept
from consortium.service import accept_invitation
from gateway.cli import app as hpcgw
from gateway.cli.admin import admin_app
from gateway.db import Database

PASSWORD = "twelve chars or more"
OS_ACTOR = f"os:{getpass.getuser()}"  # --local: the audit names who ran it on the host


@pytest.fixture
def cli(fresh_database: Database, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose commands open `fresh_database` (settings from HPCGW_* only)."""
    for name in [n for n in os.environ if n.startswith("HPCGW_") and n != "HPCGW_TEST_DB"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HPCGW_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("HPCGW_SECRET_KEY", "cli-test-secret-" + "y" * 32)
    monkeypatch.setenv("HPCGW_BASE_URL", "https://hpcgw.example.org")
    wide_cli_tables(monkeypatch, 250)
    return CliRunner()


def run(cli: CliRunner, *args: str, code: int = 0, stdin: str | None = None) -> str:
    result = cli.invoke(admin_app, ["--local", *args], input=stdin)
    assert result.exit_code == code, result.output
    return result.output


def test_admin_cli_onboards_a_member_and_invites_its_manager_audited_as_cli(
        cli: CliRunner, fresh_database: Database) -> None:
    out = run(cli, "member", "create", "acme", "--name", "ACME", "--kind", "company",
              "--contact-email", "ops@acme.test", "--identity", "local:acme:acme:acme-key")
    assert "member acme created (local)" in out
    listed = run(cli, "member", "list")
    # no cluster is configured here: the identity is recorded, its Slurm account pending
    assert "acme" in listed and "local (acme, pending)" in listed
    out = run(cli, "invite", "acme", "ada@acme.test")
    assert "https://hpcgw.example.org/ui/invitations/" in out
    link = next(w for w in out.split() if w.startswith("https://"))
    with fresh_database.transaction() as session:
        user, _ = accept_invitation(session, link.rsplit("/", 1)[1],
                                    InvitationAccept(name="Ada", password=PASSWORD),
                                    context=RequestContext())
        assert user.email == "ada@acme.test"
    shown = run(cli, "member", "show", "acme")
    assert "ada@acme.test" in shown and "manager" in shown and "acme-key" in shown
    trail = run(cli, "audit", "--actor", OS_ACTOR)
    for action in ("member.create", "identity.add", "invitation.create"):
        assert action in trail
    assert "invitation.accept" not in trail  # that one is Ada's
    with fresh_database.session() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [(e.actor, e.client_addr) for e in events[:3]] == [(OS_ACTOR, "cli")] * 3


def test_admin_cli_suspends_and_reactivates_a_member(
        cli: CliRunner, fresh_database: Database) -> None:
    run(cli, "member", "create", "acme", "--name", "ACME", "--kind", "research")
    assert "acme is suspended" in run(cli, "member", "suspend", "acme")
    with fresh_database.session() as session:
        member = session.scalar(select(Member).where(Member.slug == "acme"))
        assert member is not None and member.status == MemberStatus.suspended
    assert "acme is active" in run(cli, "member", "reactivate", "acme")
    assert "member.suspend" in run(cli, "audit", "--member", "acme")


def test_admin_cli_manages_user_accounts(cli: CliRunner, fresh_database: Database) -> None:
    out = run(cli, "user", "create", "Bob@Example.org", "--name", "Bob",
              stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert "user Bob@Example.org created" in out
    duplicate = run(cli, "user", "create", "bob@example.ORG", "--name", "Bob 2",
                    "--password", PASSWORD, code=1)
    assert "already exists" in duplicate
    assert "is an administrator" in run(cli, "user", "set-admin", "BOB@example.org")
    listed = run(cli, "user", "list")
    assert "Bob@Example.org" in listed and "yes" in listed
    assert "is not an administrator" in run(cli, "user", "set-admin", "bob@example.org",
                                            "--revoke")
    assert "deactivated" in run(cli, "user", "deactivate", "bob@example.org")
    with fresh_database.session() as session:
        bob = session.scalar(select(User).where(User.email_normalized == "bob@example.org"))
        assert bob is not None and not bob.is_active and not bob.is_admin
        assert verify_password(bob.password_hash, PASSWORD)
    trail = run(cli, "audit", "--action", "user.set_admin")
    assert trail.count("user.set_admin") == 2


@pytest.mark.parametrize(("args", "complaint"), [
    (("member", "create", "Bad_Slug", "--name", "X", "--kind", "company"), "slug"),
    (("member", "create", "acme", "--name", "X", "--kind", "company", "--identity", "local:x"),
     "CLUSTER:UNIX_USER:SLURM_ACCOUNT:KEY_REF"),
    (("user", "create", "a@b.org", "--name", "A", "--password", "short"), "password"),
    (("user", "create", "a@b.org", "--name", "A", "--password", "password1234"),
     "this password is too easy to guess: "),
    (("user", "create", "karim.haddad@lirmm.test", "--name", "K", "--password",
      "karim.haddad@lirmm.test"), "this password is too easy to guess: "),
    (("member", "show", "nobody"), "no member 'nobody'"),
    (("invite", "nobody", "a@b.org"), "no member 'nobody'"),
    (("audit", "--since", "yesterday"), "ISO 8601"),
])
def test_admin_cli_refuses_bad_input_in_one_line_without_traceback(
        cli: CliRunner, args: tuple[str, ...], complaint: str) -> None:
    result = cli.invoke(admin_app, ["--local", *args])
    assert result.exit_code == 1, result.output
    assert complaint in result.output
    assert "Traceback" not in result.output


def test_admin_cli_mails_the_invitation_when_smtp_is_configured(
        cli: CliRunner, monkeypatch: pytest.MonkeyPatch, smtp_server) -> None:
    inbox, port = smtp_server
    monkeypatch.setenv("HPCGW_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("HPCGW_SMTP__PORT", str(port))
    monkeypatch.setenv("HPCGW_SMTP__STARTTLS", "false")
    run(cli, "member", "create", "acme", "--name", "ACME", "--kind", "public_body")
    out = run(cli, "invite", "acme", "ada@acme.test", "--role", "viewer")
    assert "mailed to ada@acme.test" in out and "/ui/invitations/" not in out
    [(_, recipients, message)] = inbox.messages
    assert recipients == ["ada@acme.test"]
    assert "https://hpcgw.example.org/ui/invitations/" in message.get_payload()


def test_hpcgw_mounts_the_admin_commands(cli: CliRunner) -> None:
    result = cli.invoke(hpcgw, ["admin", "--local", "member", "list"])
    assert result.exit_code == 0, result.output
    assert "slug" in result.output
