"""Test data made through the models (fast), with credentials made the way the app makes them."""

from __future__ import annotations

import itertools

from sqlalchemy.orm import Session

from consortium.models import (
    ClusterIdentity,
    Member,
    MemberKind,
    Membership,
    Project,
    Role,
    User,
)
from consortium.passwords import hash_password
from gateway.auth.sessions import issue_access_token
from gateway.settings import Settings

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"


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
                password_hash=hash_password(password), is_admin=admin)
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
