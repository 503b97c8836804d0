"""The consortium's actions: members and their cluster identities, users and their roles,
projects, invitations, and reading the audit trail.

Every function authorizes its actor through consortium.authz before it reads or writes, and
every change writes its audit event into the caller's transaction (services flush, never
commit). An actor is a Principal (an API caller: checked) or a string naming the operator of
the gateway host ("cli"), trusted as the database credentials it runs with already are.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from consortium import audit
from consortium.audit import RequestContext
from consortium.authz import Principal, Scope, can_see_member, require, require_admin
from consortium.base import Base, utcnow
from consortium.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from consortium.mail import MailError, SmtpConfig, send_mail
from consortium.models import (
    AuditEvent,
    ClusterIdentity,
    Invitation,
    Member,
    Membership,
    MemberStatus,
    Project,
    Role,
    User,
)
from consortium.passwords import hash_password, require_strong
from consortium.schemas import (
    SLUG_PATTERN,
    AuditFilter,
    IdentityIn,
    InvitationAccept,
    InvitationCreate,
    MemberCreate,
    MembershipOut,
    MemberUpdate,
    MemberUserOut,
    ProjectCreate,
    ProjectUpdate,
    UserCreate,
    UserOut,
)
from consortium.texts import Sentence, translatable
from consortium.tokens import token_hash

Actor = Principal | str
_SLUG = re.compile(SLUG_PATTERN)


class Action(StrEnum):
    """Audit action names: one per kind of change, `target.verb`."""

    member_create = "member.create"
    member_update = "member.update"
    member_suspend = "member.suspend"
    member_reactivate = "member.reactivate"
    identity_add = "identity.add"
    identity_remove = "identity.remove"
    membership_update = "membership.update"
    membership_remove = "membership.remove"
    project_create = "project.create"
    project_update = "project.update"
    invitation_create = "invitation.create"
    invitation_revoke = "invitation.revoke"
    invitation_accept = "invitation.accept"
    user_create = "user.create"
    user_set_admin = "user.set_admin"
    user_deactivate = "user.deactivate"


class InvitationGone(DomainError):
    """A known invitation that can no longer be used: accepted, revoked or expired."""

    code = "invitation-gone"
    title = translatable("Invitation no longer valid")


class IdentityAccount(Protocol):
    @property
    def unix_user(self) -> str: ...


class ClusterAccounts(Protocol):
    """A configured cluster as far as member identities go (schedulers.config.ClusterConfig)."""

    @property
    def name(self) -> str: ...
    @property
    def identities(self) -> Mapping[str, IdentityAccount]: ...
    @property
    def logs_in(self) -> bool: ...
    def partition(self, name: str) -> object | None: ...


# --- helpers -------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """The form uniqueness is decided on (User.email_normalized): case-insensitive."""
    return email.strip().lower()


def _is_admin(actor: Actor) -> bool:
    return isinstance(actor, str) or actor.acts_as_admin


def _require(actor: Actor, scope: Scope, member_id: int) -> None:
    if isinstance(actor, Principal):
        require(actor, scope, member_id)


def _require_admin(actor: Actor) -> None:
    if isinstance(actor, Principal):
        require_admin(actor)


def _require_visible(actor: Actor, member_id: int) -> None:
    if isinstance(actor, Principal) and not can_see_member(actor, member_id):
        raise NotFound("no such object")


def _insert(session: Session, row: Base, conflict: str) -> None:
    """Add and flush in a savepoint: a unique key another transaction took first is a Conflict
    (the checks before each insert give the precise message; this covers the race)."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        raise Conflict(conflict) from exc


# --- members -------------------------------------------------------------------------------


def list_members(session: Session, actor: Actor) -> Sequence[Member]:
    """Every member for admins; the members the principal belongs to otherwise."""
    query = select(Member).options(selectinload(Member.identities)).order_by(Member.slug)
    if isinstance(actor, Principal) and not actor.acts_as_admin:
        query = query.where(Member.id.in_(actor.visible_member_ids()))
    return session.scalars(query).all()


def get_member(session: Session, actor: Actor, slug: str) -> Member:
    """The member, with its identities, if the actor may see it; NotFound otherwise."""
    if not _SLUG.fullmatch(slug):  # cannot exist; and a NUL byte is an error to PostgreSQL
        raise NotFound(f"no member '{slug}'")
    member = session.scalar(
        select(Member).where(Member.slug == slug).options(selectinload(Member.identities))
    )
    if member is None:
        raise NotFound(f"no member '{slug}'")
    try:
        _require_visible(actor, member.id)
    except NotFound:
        raise NotFound(f"no member '{slug}'") from None
    return member


def create_member(session: Session, actor: Actor, data: MemberCreate,
                  clusters: Sequence[ClusterAccounts], *, context: RequestContext) -> Member:
    """A member and its cluster identities, in one transaction (admins)."""
    _require_admin(actor)
    if session.scalar(select(Member.id).where(Member.slug == data.slug)) is not None:
        raise Conflict(f"a member '{data.slug}' already exists")
    member = Member(status=MemberStatus.active, identities=[],
                    **data.model_dump(exclude={"identities"}))
    _insert(session, member, conflict=f"a member '{data.slug}' already exists")
    audit.record(session, actor=actor, action=Action.member_create, target_type="member",
                 target_id=member.id, member_id=member.id, context=context,
                 details={"slug": member.slug, "kind": member.kind.value})
    for identity in data.identities:
        add_identity(session, actor, member, identity, clusters, context=context)
    return member


def _check_identity(data: IdentityIn, clusters: Sequence[ClusterAccounts]) -> None:
    if not clusters:  # no cluster configured (tests, a fresh install): names are not checked
        return
    cluster = next((c for c in clusters if c.name == data.cluster), None)
    if cluster is None:
        known = ", ".join(sorted(c.name for c in clusters))
        raise InvalidInput(f"no cluster '{data.cluster}' is configured (known: {known})")
    unknown = [p for p in data.allowed_partitions or [] if cluster.partition(p) is None]
    if unknown:
        raise InvalidInput(f"cluster '{data.cluster}' has no partition {', '.join(unknown)}")
    if not cluster.logs_in and not cluster.identities:
        return  # the demo's local executor: every job runs as the gateway's own user
    account = cluster.identities.get(data.ssh_key_ref)
    if account is None:
        raise InvalidInput(f"cluster '{data.cluster}' has no identity '{data.ssh_key_ref}' in "
                           "its configuration")
    if account.unix_user != data.unix_user:
        raise InvalidInput(f"identity '{data.ssh_key_ref}' logs in as '{account.unix_user}', "
                           f"not '{data.unix_user}'")


def add_identity(session: Session, actor: Actor, member: Member, data: IdentityIn,
                 clusters: Sequence[ClusterAccounts], *,
                 context: RequestContext) -> ClusterIdentity:
    """Give the member its own account on a cluster (admins). Accounts are never shared.

    The identity starts pending: its Slurm account and association are created after the
    commit (gateway.provisioning). Adding back a removed identity, the same account, restores
    it (Slurm kept it, blocked)."""
    _require_admin(actor)
    _check_identity(data, clusters)
    taken = session.scalars(select(ClusterIdentity).where(
        ClusterIdentity.cluster == data.cluster,
        (ClusterIdentity.member_id == member.id)
        | (ClusterIdentity.unix_user == data.unix_user)
        | (ClusterIdentity.slurm_account == data.slurm_account),
    )).all()
    own = next((other for other in taken if other.member_id == member.id), None)
    if own is not None and own.removed_at is not None and len(taken) == 1 and (
            own.unix_user, own.slurm_account) == (data.unix_user, data.slurm_account):
        own.removed_at = None
        own.ssh_key_ref, own.allowed_partitions = data.ssh_key_ref, data.allowed_partitions
        own.slurm_generation += 1
        session.flush()
        audit.record(session, actor=actor, action=Action.identity_add, target_type="identity",
                     target_id=own.id, member_id=member.id, context=context,
                     details={**data.model_dump(), "restored": True})
        return own
    if own is not None:
        removed = " (removed: add back the same account to restore it)" if own.removed_at else ""
        raise Conflict(f"member '{member.slug}' already has an identity on '{data.cluster}'"
                       + removed)
    if taken:
        raise Conflict(f"Unix user '{data.unix_user}' or Slurm account '{data.slurm_account}' "
                       f"on '{data.cluster}' belongs to another member: accounts are not shared")
    identity = ClusterIdentity(member_id=member.id, **data.model_dump())
    _insert(session, identity, conflict=f"the account on '{data.cluster}' was just taken")
    member.identities.append(identity)
    audit.record(session, actor=actor, action=Action.identity_add, target_type="identity",
                 target_id=identity.id, member_id=member.id, context=context,
                 details=data.model_dump())  # the key's name only: the key is never here
    return identity


def remove_identity(session: Session, actor: Actor, member: Member, cluster: str, *,
                    context: RequestContext) -> ClusterIdentity:
    """Take the member's account on a cluster away (admins): no new job goes there, and its
    Slurm association is blocked, never deleted (Slurm's accounting history and the jobs'
    records keep referring to it). Removing it again changes nothing."""
    _require_admin(actor)
    identity = next((i for i in member.identities if i.cluster == cluster), None)
    if identity is None:
        raise NotFound(f"member '{member.slug}' has no identity on '{cluster}'")
    if identity.removed_at is None:
        identity.removed_at = utcnow()
        identity.slurm_generation += 1
        session.flush()
        audit.record(session, actor=actor, action=Action.identity_remove,
                     target_type="identity", target_id=identity.id, member_id=member.id,
                     context=context, details={"cluster": cluster,
                                               "slurm_account": identity.slurm_account})
    return identity


def update_member(session: Session, actor: Actor, member: Member, data: MemberUpdate, *,
                  context: RequestContext) -> Member:
    """Rename, change the contact or the job policy, suspend or reactivate (admins). Each
    change is audited."""
    _require_admin(actor)
    changed = [
        field for field in ("name", "contact_name", "contact_email", "templates_only",
                            "max_active_jobs")
        if field in data.model_fields_set and getattr(data, field) != getattr(member, field)
    ]
    for field in changed:
        setattr(member, field, getattr(data, field))
    if changed:
        audit.record(session, actor=actor, action=Action.member_update, target_type="member",
                     target_id=member.id, member_id=member.id, context=context,
                     details={field: getattr(data, field) for field in changed})
    if data.status is not None and data.status != member.status:
        member.status = data.status
        for identity in member.identities:  # Slurm blocks or unblocks them after the commit
            identity.slurm_generation += 1
        action = (Action.member_suspend if data.status == MemberStatus.suspended
                  else Action.member_reactivate)
        audit.record(session, actor=actor, action=action, target_type="member",
                     target_id=member.id, member_id=member.id, context=context)
    session.flush()
    return member


# --- users and memberships -----------------------------------------------------------------


def user_view(session: Session, user: User) -> UserOut:
    roles = session.execute(
        select(Membership.member_id, Membership.role)
        .where(Membership.user_id == user.id).order_by(Membership.member_id)
    ).all()
    return UserOut(id=user.id, email=user.email, name=user.name, is_admin=user.is_admin,
                   is_active=user.is_active,
                   memberships=[MembershipOut(member_id=m, role=r) for m, r in roles])


def list_member_users(session: Session, actor: Actor, member: Member) -> list[MemberUserOut]:
    """The member's users with their role (its managers and admins)."""
    _require(actor, Scope.members_manage, member.id)
    rows = session.execute(
        select(User, Membership.role).join(Membership, Membership.user_id == User.id)
        .where(Membership.member_id == member.id).order_by(User.email_normalized)
    ).all()
    return [_member_user(user, role) for user, role in rows]


def _member_user(user: User, role: Role) -> MemberUserOut:
    return MemberUserOut(user_id=user.id, email=user.email, name=user.name, role=role,
                         is_active=user.is_active)


def _membership(session: Session, member: Member, user_id: int) -> tuple[Membership, User]:
    row = session.execute(
        select(Membership, User).join(User, User.id == Membership.user_id)
        .where(Membership.member_id == member.id, Membership.user_id == user_id)
    ).first()
    if row is None:
        raise NotFound(f"user {user_id} is not a user of '{member.slug}'")
    return row[0], row[1]


def _keep_a_manager(session: Session, actor: Actor, member: Member) -> None:
    """Managers cannot leave their member without one (admins can: they manage any member)."""
    if _is_admin(actor):
        return
    # rows locked (PostgreSQL; SQLite writers are serial): two managers demoting each other
    # at once cannot both pass
    managers = session.scalars(select(Membership.user_id).where(
        Membership.member_id == member.id, Membership.role == Role.manager).with_for_update()
    ).all()
    if len(managers) <= 1:
        raise Conflict(f"'{member.slug}' would be left without a manager: make another user "
                       "manager first")


def change_role(session: Session, actor: Actor, member: Member, user_id: int, role: Role, *,
                context: RequestContext) -> MemberUserOut:
    _require(actor, Scope.members_manage, member.id)
    membership, user = _membership(session, member, user_id)
    previous = membership.role
    if role != previous:
        if previous == Role.manager:
            _keep_a_manager(session, actor, member)
        membership.role = role
        session.flush()
        audit.record(session, actor=actor, action=Action.membership_update, target_type="user",
                     target_id=user.id, member_id=member.id, context=context,
                     details={"from": previous.value, "to": role.value})
    return _member_user(user, role)


def remove_membership(session: Session, actor: Actor, member: Member, user_id: int, *,
                      context: RequestContext) -> None:
    _require(actor, Scope.members_manage, member.id)
    membership, user = _membership(session, member, user_id)
    if membership.role == Role.manager:
        _keep_a_manager(session, actor, member)
    session.delete(membership)
    session.flush()
    audit.record(session, actor=actor, action=Action.membership_remove, target_type="user",
                 target_id=user.id, member_id=member.id, context=context,
                 details={"role": membership.role.value})


def list_users(session: Session, actor: Actor) -> list[UserOut]:
    _require_admin(actor)
    users = session.scalars(select(User).order_by(User.email_normalized)).all()
    return [user_view(session, user) for user in users]


def get_user(session: Session, actor: Actor, email: str) -> User:
    _require_admin(actor)
    user = session.scalar(select(User).where(User.email_normalized == normalize_email(email)))
    if user is None:
        raise NotFound(f"no user '{email}'")
    return user


def create_user(session: Session, actor: Actor, data: UserCreate, *,
                context: RequestContext) -> User:
    """An account with no membership (admins; members' people come through invitations)."""
    _require_admin(actor)
    normalized = normalize_email(data.email)
    duplicate = f"an account with the email '{data.email}' already exists"
    if session.scalar(select(User.id).where(User.email_normalized == normalized)) is not None:
        raise Conflict(duplicate)
    require_strong(data.password, [data.email, data.name])
    user = User(email=data.email, email_normalized=normalized, name=data.name,
                password_hash=hash_password(data.password), is_admin=data.is_admin,
                is_active=True)
    _insert(session, user, conflict=duplicate)
    audit.record(session, actor=actor, action=Action.user_create, target_type="user",
                 target_id=user.id, context=context, details={"is_admin": data.is_admin})
    return user


def set_admin(session: Session, actor: Actor, email: str, is_admin: bool, *,
              context: RequestContext) -> User:
    user = get_user(session, actor, email)
    if user.is_admin != is_admin:
        user.is_admin = is_admin
        audit.record(session, actor=actor, action=Action.user_set_admin, target_type="user",
                     target_id=user.id, context=context, details={"is_admin": is_admin})
        session.flush()
    return user


def deactivate_user(session: Session, actor: Actor, email: str, *,
                    context: RequestContext) -> User:
    """Every credential of the user stops working at once (the principal refuses it)."""
    user = get_user(session, actor, email)
    if user.is_active:
        user.is_active = False
        audit.record(session, actor=actor, action=Action.user_deactivate, target_type="user",
                     target_id=user.id, context=context)
        session.flush()
    return user


# --- projects ------------------------------------------------------------------------------


def list_projects(session: Session, actor: Actor, member: Member) -> Sequence[Project]:
    _require_visible(actor, member.id)
    return session.scalars(
        select(Project).where(Project.member_id == member.id).order_by(Project.slug)
    ).all()


def get_project(session: Session, actor: Actor, member: Member, slug: str) -> Project:
    _require_visible(actor, member.id)
    project = None if not _SLUG.fullmatch(slug) else session.scalar(
        select(Project).where(Project.member_id == member.id, Project.slug == slug)
    )
    if project is None:
        raise NotFound(f"no project '{slug}' in '{member.slug}'")
    return project


def create_project(session: Session, actor: Actor, member: Member, data: ProjectCreate, *,
                   context: RequestContext) -> Project:
    _require(actor, Scope.members_manage, member.id)
    duplicate = f"'{member.slug}' already has a project '{data.slug}'"
    if session.scalar(select(Project.id).where(Project.member_id == member.id,
                                               Project.slug == data.slug)) is not None:
        raise Conflict(duplicate)
    project = Project(member_id=member.id, **data.model_dump())
    _insert(session, project, conflict=duplicate)
    audit.record(session, actor=actor, action=Action.project_create, target_type="project",
                 target_id=project.id, member_id=member.id, context=context,
                 details={"slug": project.slug, "domain": project.domain.value})
    return project


def update_project(session: Session, actor: Actor, member: Member, slug: str,
                   data: ProjectUpdate, *, context: RequestContext) -> Project:
    _require(actor, Scope.members_manage, member.id)
    project = get_project(session, actor, member, slug)
    changes = {
        field: value for field, value in data.model_dump(exclude_unset=True).items()
        if value != getattr(project, field)
    }
    if changes:
        for field, value in changes.items():
            setattr(project, field, value)
        session.flush()
        audit.record(session, actor=actor, action=Action.project_update, target_type="project",
                     target_id=project.id, member_id=member.id, context=context,
                     details={k: str(v) for k, v in changes.items()})
    return project


# --- invitations ---------------------------------------------------------------------------


def create_invitation(session: Session, actor: Actor, member: Member, data: InvitationCreate,
                      *, ttl: timedelta, context: RequestContext) -> tuple[Invitation, str]:
    """A single-use invitation; returns it and its token, which only its hash is kept of.

    Managers invite to their own member, any role; admins to any member.
    """
    _require(actor, Scope.members_manage, member.id)
    if member.status != MemberStatus.active:
        raise Conflict(f"'{member.slug}' is suspended: reactivate it before inviting")
    email = normalize_email(data.email)
    if session.scalar(
        select(Membership.user_id).join(User, User.id == Membership.user_id)
        .where(Membership.member_id == member.id, User.email_normalized == email)
    ) is not None:
        raise Conflict(f"'{data.email}' is already a user of '{member.slug}'")
    now = utcnow()
    if session.scalar(select(Invitation.id).where(
        Invitation.member_id == member.id, func.lower(Invitation.email) == email,
        Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None),
        Invitation.expires_at > now,
    )) is not None:
        raise Conflict(f"'{data.email}' already has a pending invitation to '{member.slug}': "
                       "revoke it to send a new one")
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        member_id=member.id, email=data.email, role=data.role, token_hash=token_hash(token),
        invited_by_id=actor.user_id if isinstance(actor, Principal) else None,
        created_at=now, expires_at=now + ttl,
    )
    session.add(invitation)
    session.flush()
    audit.record(session, actor=actor, action=Action.invitation_create,
                 target_type="invitation", target_id=invitation.id, member_id=member.id,
                 context=context, details={"email": data.email, "role": data.role.value})
    return invitation, token


def list_invitations(session: Session, actor: Actor, member: Member) -> Sequence[Invitation]:
    _require(actor, Scope.members_manage, member.id)
    return session.scalars(
        select(Invitation).where(Invitation.member_id == member.id)
        .order_by(Invitation.id.desc())
    ).all()


def revoke_invitation(session: Session, actor: Actor, member: Member, invitation_id: int, *,
                      context: RequestContext) -> None:
    """Revoke a pending invitation; revoking it again changes nothing."""
    _require(actor, Scope.members_manage, member.id)
    invitation = session.scalar(select(Invitation).where(
        Invitation.id == invitation_id, Invitation.member_id == member.id))
    if invitation is None:
        raise NotFound(f"no invitation {invitation_id} in '{member.slug}'")
    if invitation.accepted_at is not None:
        raise Conflict("this invitation was accepted: remove the membership instead")
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        session.flush()
        audit.record(session, actor=actor, action=Action.invitation_revoke,
                     target_type="invitation", target_id=invitation.id, member_id=member.id,
                     context=context)


def _check_usable(invitation: Invitation, now: datetime) -> None:
    if invitation.accepted_at is not None:
        raise InvitationGone(Sentence("this invitation was already used"))
    if invitation.revoked_at is not None:
        raise InvitationGone(Sentence("this invitation was revoked"))
    if invitation.expires_at <= now:
        raise InvitationGone(Sentence("this invitation has expired: ask for a new one"))


def _usable_invitation(session: Session, token: str, now: datetime) -> Invitation:
    invitation = session.scalar(
        select(Invitation).where(Invitation.token_hash == token_hash(token)))
    if invitation is None:
        raise NotFound("no such invitation")
    _check_usable(invitation, now)
    return invitation


@dataclass(frozen=True)
class InvitationPreview:
    """What the invitee sees before accepting (public: the token is the credential). Nothing
    in it depends on whether the email has an account: the page offers both ways to accept."""

    email: str
    role: Role
    member_name: str


def preview_invitation(session: Session, token: str) -> InvitationPreview:
    """The usable invitation of a token; NotFound if unknown, InvitationGone once unusable."""
    invitation = _usable_invitation(session, token, utcnow())
    member = session.get_one(Member, invitation.member_id)
    return InvitationPreview(email=invitation.email, role=invitation.role,
                             member_name=member.name)


# One refusal, word for word, for a caller not signed in who cannot create the account: it
# sent no name and password, or the email already has an account (whose name and password an
# invitation's token never sets). Whether the email has an account is not told.
SIGN_IN_OR_CREATE = ("sign in as the invited account to accept, or, if that email has no "
                     "account yet, send a name and a password to create it")


class InvitationNeedsSignIn(Unauthenticated):
    code = "invitation-sign-in"
    title = translatable("Sign in to accept")


def accept_invitation(session: Session, token: str, data: InvitationAccept, *,
                      signed_in: Principal | None = None, context: RequestContext
                      ) -> tuple[User, Membership]:
    """Use an invitation once; returns the account and its new membership.

    Signed in as the invited email (a session or OIDC login, not a personal access token): the
    membership is added to that account. Not signed in: a name and a password create the
    account, and only when the email has none (see SIGN_IN_OR_CREATE).
    """
    now = utcnow()
    invitation = _usable_invitation(session, token, now)
    email = normalize_email(invitation.email)
    if signed_in is not None:
        user = _signed_in_invitee(session, signed_in, email, data)
        if session.get(Membership, (user.id, invitation.member_id)) is not None:
            raise Conflict("this account is already a user of the member")
    else:
        if data.name is None or data.password is None:
            raise InvitationNeedsSignIn(SIGN_IN_OR_CREATE)
        # after the token's check: a caller without a good token never gets to spend it
        require_strong(data.password, [invitation.email, data.name])
        if session.scalar(select(User.id).where(User.email_normalized == email)) is not None:
            raise InvitationNeedsSignIn(SIGN_IN_OR_CREATE)
        user = User(email=invitation.email, email_normalized=email, name=data.name,
                    password_hash=hash_password(data.password), is_admin=False, is_active=True)
        _insert(session, user, conflict="an account with this email was just created: "
                                        "accept the invitation again")
    # Claimed by a conditional UPDATE: of two concurrent acceptances, one wins.
    claimed = session.scalar(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None),
               Invitation.revoked_at.is_(None), Invitation.expires_at > now)
        .values(accepted_at=now, accepted_user_id=user.id)
        .returning(Invitation.id)
        .execution_options(synchronize_session=False)
    )
    if claimed is None:
        raise InvitationGone(Sentence("this invitation was used or revoked meanwhile"))
    membership = Membership(user_id=user.id, member_id=invitation.member_id,
                            role=invitation.role)
    session.add(membership)
    session.flush()
    audit.record(session, actor=user.email, action=Action.invitation_accept,
                 target_type="invitation", target_id=invitation.id,
                 member_id=invitation.member_id, context=context,
                 details={"user_id": user.id, "new_user": signed_in is None,
                          "role": invitation.role.value})
    return user, membership


def _signed_in_invitee(session: Session, signed_in: Principal, email: str,
                       data: InvitationAccept) -> User:
    """The account of a signed-in caller, if it is the invited one."""
    if data.name is not None or data.password is not None:
        raise InvalidInput("signed in, accept without a name or a password: the account keeps "
                           "its own")
    if signed_in.via == "pat":
        raise PermissionDenied("a personal access token cannot accept an invitation: sign in "
                               "with your password (or your organisation's login)")
    if normalize_email(signed_in.email) != email:
        raise PermissionDenied("this invitation is for another email: sign in as the invited "
                               "account to accept it")
    return session.get_one(User, signed_in.user_id)


def invitation_link(base_url: str, token: str) -> str:
    """The page where the invitee creates an account or signs in to accept (the same service
    as /api/v1/invitations/{token}/accept)."""
    return f"{base_url.rstrip('/')}/ui/invitations/{token}"


@dataclass(frozen=True)
class Delivery:
    mail: Literal["sent", "not_configured", "failed"]
    error: str | None = None


def deliver_invitation(smtp: SmtpConfig | None, invitation: Invitation, member_name: str,
                       link: str) -> Delivery:
    """Mail the link to the invitee. Call it after the commit: a mail never announces an
    invitation that did not land, and a failed mail leaves the invitation valid."""
    if smtp is None:
        return Delivery("not_configured")
    body = (
        f"You are invited to join {member_name} on the consortium's computing gateway "
        f"(hpcgw) as {invitation.role.value}.\n\n"
        f"Open this link to accept; it works once, until "
        f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC:\n\n{link}\n\n"
        "If you did not expect this invitation, ignore this message.\n"
    )
    try:
        send_mail(smtp, to=invitation.email, subject=f"Invitation to join {member_name} on hpcgw",
                  body=body)
    except MailError as exc:
        return Delivery("failed", str(exc))
    return Delivery("sent")


# --- audit ---------------------------------------------------------------------------------


def list_audit(session: Session, actor: Actor, filters: AuditFilter, *, before_id: int | None,
               limit: int) -> tuple[Sequence[AuditEvent], int | None]:
    """A page of the audit trail, newest first (id desc), and the cursor of the next page."""
    _require_admin(actor)
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if filters.member is not None:
        query = query.where(AuditEvent.member_id == get_member(session, actor, filters.member).id)
    if filters.actor is not None:
        query = query.where(AuditEvent.actor == filters.actor)
    if filters.action is not None:
        query = query.where(AuditEvent.action == filters.action)
    if filters.outcome is not None:
        query = query.where(AuditEvent.outcome == filters.outcome)
    if filters.since is not None:
        query = query.where(AuditEvent.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.at < filters.until)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    events = session.scalars(query).all()
    if len(events) > limit:
        return events[:limit], events[limit - 1].id
    return events, None
