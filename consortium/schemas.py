"""What the consortium's API and CLI take and give: pydantic shapes, never the ORM tables."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from consortium.models import (
    Domain,
    Invitation,
    MemberKind,
    MemberStatus,
    Outcome,
    ProjectStatus,
    Role,
)
from consortium.texts import Sentence

MIN_PASSWORD_LENGTH = 12

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
# One line of text: no control characters, so a name can go into a mail header safely.
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                      pattern=r"^[^\x00-\x1f\x7f]+$"),
]
# Structural check only: email-validator refuses the reserved domains (.test, .local) that
# test setups and internal consortium relays use, and deliverability is the mail server's call.
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=320,
                      pattern=r"^[^@\s<>,;\x00-\x1f\x7f]{1,64}@[^@\s<>,;\x00-\x1f\x7f]+"
                              r"\.[^@\s<>,;\x00-\x1f\x7f]+$"),
]
# Free text may span lines, but holds no NUL (PostgreSQL text cannot store it).
Text = Annotated[str, StringConstraints(max_length=5000, pattern=r"^[^\x00]*$")]


# Every password set (accounts made by admins, the CLI, invitations) is one of these. Its
# strength (consortium.passwords.require_strong) is the services' to check: the account's email
# is a guess to count, and the estimate costs tens of milliseconds, spent only once an
# invitation's token has been found good.
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD_LENGTH, max_length=1024)]
UnixUser = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
SlurmAccount = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_][a-z0-9_.-]{0,63}$")]
PartitionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
# The NAME of a key (an identity of the cluster's configuration): no spaces or newlines, so a
# pasted private key is refused instead of stored.
KeyRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/@+-]{1,200}$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- members -------------------------------------------------------------------------------


class IdentityIn(_In):
    cluster: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    unix_user: UnixUser
    slurm_account: SlurmAccount
    ssh_key_ref: KeyRef = Field(description="name of an identity in the cluster's configuration")
    allowed_partitions: list[PartitionName] | None = Field(
        default=None, max_length=64, description="the partitions it may use there; null: all")


class IdentityOut(_Out):
    cluster: str
    unix_user: str
    slurm_account: str
    ssh_key_ref: str
    allowed_partitions: list[str] | None
    provisioning: Literal["provisioned", "pending", "removed"] = Field(
        description="pending: the Slurm account, association or block is not in place yet "
                    "(retried by the tracker and `hpcgw clusters sync`); removed: blocked in "
                    "Slurm, its accounting history kept")
    slurm_synced_at: datetime | None
    slurm_error: str | None = Field(description="why the last provisioning attempt failed")
    removed_at: datetime | None


class MemberCreate(_In):
    slug: Slug
    name: Name
    kind: MemberKind
    contact_name: Name | None = None
    contact_email: Email | None = None
    templates_only: bool = False
    max_active_jobs: int | None = Field(default=None, ge=1, le=1_000_000)
    identities: list[IdentityIn] = Field(default_factory=list, max_length=32)


class MemberUpdate(_In):
    """Only the fields sent change; `status` suspends or reactivates the member. The job policy:
    `templates_only` (admin-approved templates, no free scripts) and `max_active_jobs` (null:
    the gateway's default)."""

    name: Name | None = None
    contact_name: Name | None = None
    contact_email: Email | None = None
    status: MemberStatus | None = None
    templates_only: bool | None = None
    max_active_jobs: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _no_null_where_a_value_is_needed(self) -> MemberUpdate:
        for field in ("name", "status", "templates_only"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class MemberOut(_Out):
    id: int
    slug: str
    name: str
    kind: MemberKind
    status: MemberStatus
    contact_name: str | None
    contact_email: str | None
    templates_only: bool
    max_active_jobs: int | None
    created_at: datetime
    identities: list[IdentityOut]


# --- users and memberships -----------------------------------------------------------------


class MembershipOut(_Out):
    member_id: int
    role: Role


class UserOut(_Out):
    id: int
    email: str
    name: str
    is_admin: bool
    is_active: bool
    memberships: list[MembershipOut]


class UserCreate(_In):
    email: Email
    name: Name
    password: Password
    is_admin: bool = False


class UserUpdate(_In):
    """An administrator's change to an account: the admin flag, or deactivation (for good:
    every credential of the account stops working at once)."""

    is_admin: bool | None = None
    is_active: Literal[False] | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.is_admin is None and self.is_active is None:
            raise ValueError("nothing to change: give is_admin or is_active")
        return self


class MemberUserOut(BaseModel):
    """A user as seen by one member: its role there."""

    user_id: int
    email: str
    name: str
    role: Role
    is_active: bool


class RoleChange(_In):
    role: Role


# --- projects ------------------------------------------------------------------------------


class ProjectCreate(_In):
    slug: Slug
    name: Name
    domain: Domain
    description: Text = ""


class ProjectUpdate(_In):
    name: Name | None = None
    domain: Domain | None = None
    description: Text | None = None
    status: ProjectStatus | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> ProjectUpdate:
        nulls = [f for f in self.model_fields_set if getattr(self, f) is None]
        if nulls:
            raise ValueError(f"cannot be null: {', '.join(sorted(nulls))}")
        return self


class ProjectOut(_Out):
    id: int
    member_id: int
    slug: str
    name: str
    domain: Domain
    description: str
    status: ProjectStatus
    created_at: datetime


# --- invitations ---------------------------------------------------------------------------


class InvitationStatus(StrEnum):
    pending = "pending"
    accepted = "accepted"
    revoked = "revoked"
    expired = "expired"


class InvitationCreate(_In):
    email: Email
    role: Role


class InvitationOut(BaseModel):
    """An invitation as listed; the token was shown once, to whoever invited, and is not kept."""

    id: int
    member_id: int
    email: str
    role: Role
    status: InvitationStatus
    invited_by_id: int | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, invitation: Invitation, now: datetime, **extra: Any) -> Self:
        if invitation.accepted_at is not None:
            status = InvitationStatus.accepted
        elif invitation.revoked_at is not None:
            status = InvitationStatus.revoked
        elif invitation.expires_at <= now:
            status = InvitationStatus.expired
        else:
            status = InvitationStatus.pending
        return cls(
            id=invitation.id, member_id=invitation.member_id, email=invitation.email,
            role=invitation.role, status=status, invited_by_id=invitation.invited_by_id,
            created_at=invitation.created_at, expires_at=invitation.expires_at,
            accepted_at=invitation.accepted_at, revoked_at=invitation.revoked_at, **extra,
        )


class InvitationCreated(InvitationOut):
    """`link` carries the single-use token; it is given only when no mail took it to the invitee
    (SMTP not configured, or sending failed: `mail_error` says why)."""

    mail: Literal["sent", "not_configured", "failed"]
    mail_error: str | None = None
    link: str | None = None


class InvitationAccept(_In):
    """A new account sets a name and a password; an account signed in as the invited email
    sends neither (it keeps its own)."""

    name: Name | None = None
    password: Password | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.name is None) != (self.password is None):
            raise ValueError(Sentence("give a name and a password for a new account, or neither "
                                      "when signed in as the invited account"))
        return self


class InvitationAccepted(BaseModel):
    """The account that accepted and the membership the invitation made: never the account's
    other memberships (an invitation's token is no credential for them)."""

    email: str
    name: str
    membership: MembershipOut


# --- audit ---------------------------------------------------------------------------------


class AuditFilter(_In):
    member: str | None = None  # slug
    actor: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditEventOut(_Out):
    id: int
    at: datetime
    actor: str
    actor_user_id: int | None
    member_id: int | None
    action: str
    target_type: str
    target_id: str | None
    outcome: Outcome
    client_addr: str | None
    request_id: str | None
    details: dict[str, Any]
