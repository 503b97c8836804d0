"""Who may act for which member: the one place that decides.

A principal is a user seen through one credential. Its rights are its roles in its members
(or the admin flag), narrowed by the credential's scopes: a token never widens a role.
Every route and query that touches a member's objects asks `member_ids_for` or `require`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from consortium.errors import NotFound, PermissionDenied
from consortium.models import Role


class Scope(StrEnum):
    jobs_read = "jobs:read"
    jobs_write = "jobs:write"
    usage_read = "usage:read"
    members_manage = "members:manage"
    admin = "admin"


ALL_SCOPES = frozenset(Scope)

# What each member role allows, expressed as the scopes a credential needs for it.
ROLE_SCOPES: Mapping[Role, frozenset[Scope]] = {
    Role.manager: frozenset(
        {Scope.jobs_read, Scope.jobs_write, Scope.usage_read, Scope.members_manage}
    ),
    Role.researcher: frozenset({Scope.jobs_read, Scope.jobs_write, Scope.usage_read}),
    Role.viewer: frozenset({Scope.usage_read}),
}


def grantable_scopes(is_admin: bool, roles: Mapping[int, Role]) -> frozenset[Scope]:
    """The scopes a user may put on a token it mints: never more than its roles allow."""
    granted: set[Scope] = set(ALL_SCOPES if is_admin else ())
    for role in roles.values():
        granted |= ROLE_SCOPES[role]
    return frozenset(granted)


@dataclass(frozen=True)
class Principal:
    user_id: int
    email: str
    is_admin: bool
    roles: Mapping[int, Role]  # member id -> role, active members only
    scopes: frozenset[Scope] = ALL_SCOPES
    token_member_id: int | None = None  # the credential is confined to this member
    via: str = "session"  # session | pat | oidc
    token_id: int | None = field(default=None, compare=False)
    # when the credential stops being valid; None: it does not expire
    expires_at: datetime | None = field(default=None, compare=False)

    def has_scope(self, scope: Scope) -> bool:
        return scope in self.scopes or (Scope.admin in self.scopes and self.is_admin)

    @property
    def acts_as_admin(self) -> bool:
        """Admin rights need both the flag and the `admin` scope on the credential."""
        return self.is_admin and Scope.admin in self.scopes and self.token_member_id is None

    def visible_member_ids(self) -> frozenset[int]:
        ids = frozenset(self.roles)
        if self.token_member_id is not None:
            ids &= {self.token_member_id}
        return ids

    def held_scopes(self) -> frozenset[Scope]:
        """The scopes this credential can use, by the rule `require` applies: a scope is held
        when it allows acting on some member (every scope for an acting admin)."""
        return frozenset(s for s in Scope if member_ids_for(self, s) != frozenset())


def member_ids_for(principal: Principal, scope: Scope) -> frozenset[int] | None:
    """Member ids the principal may act on with `scope`; None means every member (admins)."""
    if principal.acts_as_admin:
        return None
    if not principal.has_scope(scope):
        return frozenset()
    return frozenset(
        member_id
        for member_id in principal.visible_member_ids()
        if scope in ROLE_SCOPES[principal.roles[member_id]]
    )


def can_see_member(principal: Principal, member_id: int) -> bool:
    return principal.acts_as_admin or member_id in principal.visible_member_ids()


def require(principal: Principal, scope: Scope, member_id: int) -> None:
    """Raise unless the principal may act on `member_id` with `scope`.

    A member the principal cannot see at all answers NotFound (404), never PermissionDenied:
    the existence of another member's objects is not disclosed.
    """
    if not can_see_member(principal, member_id):
        raise NotFound("no such object")
    allowed = member_ids_for(principal, scope)
    if allowed is not None and member_id not in allowed:
        raise PermissionDenied(f"this action needs the '{scope}' right on this member")


def require_admin(principal: Principal) -> None:
    if not principal.acts_as_admin:
        raise PermissionDenied("this action is reserved to consortium administrators")
