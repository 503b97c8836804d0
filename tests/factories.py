"""Test data made through the models (fast), with credentials made the way the app makes them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.models import (
    AuditEvent,
    ClusterIdentity,
    Member,
    MemberKind,
    Membership,
    Project,
    Role,
    User,
)
from consortium.passwords import hash_password
from consortium.service import Action
from gateway.auth.sessions import issue_access_token
from gateway.cli import runtime
from gateway.settings import Settings
from schedulers.config import BillingWeights

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"
# one argon2 run (about half a second) per distinct password: users made with the same
# password share its hash, which is harmless in tests
_password_hash = cache(hash_password)
# a partition must price CPUs and memory: 1 SU per GPU-hour, per 4 CPU-hours, per 16 GiB-hours
WEIGHTS = BillingWeights(gpu=1.0, cpu=0.25, mem_gb=0.0625)


def make_member(session: Session, slug: str | None = None,
                kind: MemberKind = MemberKind.company, cluster: str = "local") -> Member:
    n = next(_seq)
    slug = slug or f"member-{n}"
    member = Member(slug=slug, name=f"Member {slug}", kind=kind, contact_email=f"ops@{slug}.test")
    session.add(member)
    session.flush()
    session.add(ClusterIdentity(member_id=member.id, cluster=cluster, unix_user=f"u{member.id}{n}",
                                slurm_account=f"acct{member.id}{n}", ssh_key_ref=f"key-{slug}"))
    session.flush()
    return member


def make_user(session: Session, *, email: str | None = None, admin: bool = False,
              roles: dict[Member, Role] | None = None, password: str = PASSWORD) -> User:
    email = email or f"user{next(_seq)}@example.test"
    user = User(email=email, email_normalized=email.lower(), name=email.split("@")[0],
                password_hash=_password_hash(password), is_admin=admin)
    session.add(user)
    session.flush()
    for member, role in (roles or {}).items():
        session.add(Membership(user_id=user.id, member_id=member.id, role=role))
    session.flush()
    return user


def make_project(session: Session, member: Member, slug: str | None = None) -> Project:
    from consortium.models import Domain

    project = Project(member_id=member.id, slug=slug or f"proj-{next(_seq)}",
                      name="A project", domain=Domain.research)
    session.add(project)
    session.flush()
    return project


def auth_headers(settings: Settings, user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_access_token(settings, user.id)}"}


def audit_events(session: Session, action: str | None = None) -> list[AuditEvent]:
    """The consortium's audit events (members, identities, users, projects, invitations),
    oldest first; re-read, as the app wrote them through sessions of its own."""
    session.expire_all()
    query = (select(AuditEvent).where(AuditEvent.action.in_([a.value for a in Action]))
             .order_by(AuditEvent.id))
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query))


@dataclass
class Cast:
    """Who is who: `acme` has a manager, a researcher and a viewer; `globex` a manager."""

    acme: Member
    globex: Member
    admin: User
    manager: User
    researcher: User
    viewer: User
    globex_manager: User


def make_cast(session: Session) -> Cast:
    acme, globex = make_member(session, "acme"), make_member(session, "globex")
    return Cast(
        acme=acme,
        globex=globex,
        admin=make_user(session, email="admin@consortium.test", admin=True),
        manager=make_user(session, email="manager@acme.test", roles={acme: Role.manager}),
        researcher=make_user(session, email="researcher@acme.test",
                             roles={acme: Role.researcher}),
        viewer=make_user(session, email="viewer@acme.test", roles={acme: Role.viewer}),
        globex_manager=make_user(session, email="manager@globex.test",
                                 roles={globex: Role.manager}),
    )


def wide_cli_tables(monkeypatch: pytest.MonkeyPatch, columns: int = 250) -> None:
    """The CLI's rich tables one line a row. rich fixes a console's width when the console is
    made if COLUMNS is set then (the CLI's are made at import; xdist's workers have it set), so
    the consoles get the width too, not only the environment."""
    monkeypatch.setenv("COLUMNS", str(columns))
    for console in (runtime.console, runtime.err_console):
        monkeypatch.setattr(console, "width", columns)
