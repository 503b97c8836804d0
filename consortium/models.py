"""Tables of the consortium: members, people, projects, cluster identities, credentials, audit."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consortium.base import Base, BigIntPK, UTCDateTime, enum_column, utcnow


class MemberKind(StrEnum):
    public_body = "public_body"
    research = "research"
    company = "company"


class MemberStatus(StrEnum):
    active = "active"
    suspended = "suspended"


class Role(StrEnum):
    manager = "manager"
    researcher = "researcher"
    viewer = "viewer"


class Domain(StrEnum):
    """Use-case domains of PRODUCT.md; the transparency report groups by them."""

    education = "education"
    culture = "culture"
    ecological_transition = "ecological_transition"
    employment = "employment"
    disinformation = "disinformation"
    health = "health"
    mobility = "mobility"
    public_services = "public_services"
    research = "research"
    other = "other"


class ProjectStatus(StrEnum):
    active = "active"
    archived = "archived"


class Outcome(StrEnum):
    success = "success"
    denied = "denied"
    failed = "failed"


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[MemberKind] = mapped_column(enum_column(MemberKind, "member_kind"))
    status: Mapped[MemberStatus] = mapped_column(
        enum_column(MemberStatus, "member_status"), default=MemberStatus.active
    )
    contact_name: Mapped[str | None] = mapped_column(String(200))
    contact_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # job policy (gateway.jobs): admin-approved templates only; a cap on jobs not yet ended
    templates_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)

    identities: Mapped[list[ClusterIdentity]] = relationship(
        back_populates="member", lazy="raise", order_by="ClusterIdentity.cluster"
    )


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # lower-cased copy: the uniqueness that counts (case-insensitive) on SQLite and PostgreSQL alike
    email_normalized: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # the web interface's language the person chose (None: the visitor's cookie, else French)
    locale: Mapped[str | None] = mapped_column(String(8))

    memberships: Mapped[list[Membership]] = relationship(back_populates="user", lazy="raise")


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"),
                                           primary_key=True, index=True)
    role: Mapped[Role] = mapped_column(enum_column(Role, "role"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships", lazy="raise")
    member: Mapped[Member] = relationship(lazy="raise")


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("member_id", "slug"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="RESTRICT"),
                                           index=True)
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    domain: Mapped[Domain] = mapped_column(enum_column(Domain, "project_domain"))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ProjectStatus] = mapped_column(
        enum_column(ProjectStatus, "project_status"), default=ProjectStatus.active
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ClusterIdentity(Base):
    """A member's own Unix and Slurm account on one cluster (never shared between members).

    `ssh_key_ref` names the key (a file path or a secret store name) the gateway uses; the key
    itself never enters the database, a response or a log line.
    """

    __tablename__ = "cluster_identities"
    __table_args__ = (
        UniqueConstraint("member_id", "cluster"),
        UniqueConstraint("cluster", "unix_user"),
        UniqueConstraint("cluster", "slurm_account"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    cluster: Mapped[str] = mapped_column(String(64))
    unix_user: Mapped[str] = mapped_column(String(32))
    slurm_account: Mapped[str] = mapped_column(String(64))
    ssh_key_ref: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # partitions the member may submit to on this cluster; None: all of them
    allowed_partitions: Mapped[list[str] | None] = mapped_column(JSON)
    # removed: kept (its jobs and Slurm's accounting history refer to it), blocked in Slurm
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # an outbox: every change Slurm must follow (added, member suspended or reactivated,
    # removed) bumps slurm_generation; provisioning records what it applied
    slurm_generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    slurm_synced_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    slurm_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    slurm_error: Mapped[str | None] = mapped_column(String(500))

    @property
    def provisioning(self) -> str:
        """"pending" until Slurm holds what the gateway wants; then "provisioned", or "removed"
        (blocked in Slurm) once the identity is removed."""
        if self.slurm_synced_generation < self.slurm_generation:
            return "pending"
        return "provisioned" if self.removed_at is None else "removed"

    member: Mapped[Member] = relationship(back_populates="identities", lazy="raise")


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"),
                                           index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[Role] = mapped_column(enum_column(Role, "role"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id",
                                                                    ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AccessToken(Base):
    """A personal access token: `hpcgw_pat_` + secret, stored as the SHA-256 of the whole string.

    The secret has 256 bits of entropy, so a fast hash is enough (no argon2 per request).
    """

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # a token may be confined to one of its user's members (a manager's reporting token)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(24))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RefreshToken(Base):
    """Opaque, single-use renewal token of a login session; rotated on every use.

    `family` ties the chain of rotations together: presenting a token already used revokes the
    whole family (a stolen refresh token is then worth one renewal at most).
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failed-login counter per key (`account:<email>` or `addr:<ip>`), shared by all replicas."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """Append-only: the migration adds triggers that refuse UPDATE and DELETE on this table."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_member_id_id", "member_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(Integer)  # no FK: survives user removal
    actor: Mapped[str] = mapped_column(String(320))  # email, or "system" / "cli"
    member_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[Outcome] = mapped_column(enum_column(Outcome, "audit_outcome"))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AuthEpoch(Base):
    """One row, bumped by database triggers (migration 0005) whenever anything a principal is
    made of changes: a token revoked or re-scoped, a user disabled or made admin, a membership
    added, changed or removed, a member suspended. Caches of authenticated principals compare it
    on every use, so such a change takes effect on the next request, in every process."""

    __tablename__ = "auth_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
