"""Personal access tokens and refresh tokens: minted, checked, rotated and revoked.

Both are opaque, 256-bit random strings stored as the SHA-256 of the whole string: a database
leak yields no usable credential, and a fast hash is enough for that much entropy. Validity is
read from the database on every use (no cache), so a revocation counts from the next request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from consortium import audit
from consortium.audit import RequestContext
from consortium.authz import ROLE_SCOPES, Principal, Scope, grantable_scopes
from consortium.errors import Conflict, InvalidInput, NotFound, PermissionDenied, Unauthenticated
from consortium.models import AccessToken, Outcome, RefreshToken, User

PAT_PREFIX = "hpcgw_pat_"
REFRESH_PREFIX = "hpcgw_rt_"
DISPLAY_SECRET_CHARS = 4
MAX_PAT_LIFETIME = timedelta(days=365)
DEFAULT_PAT_LIFETIME = timedelta(days=90)
MAX_ACTIVE_PATS = 100
# last_used_at is written at most this often per token: not one write per request
LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


# --- personal access tokens -------------------------------------------------------------


def mintable_scopes(principal: Principal, member_id: int | None) -> frozenset[Scope]:
    """What a new token may carry: the user's roles (in `member_id` if confined), never more
    than the current credential itself holds."""
    if member_id is None:
        roles_allow = grantable_scopes(principal.is_admin, principal.roles)
    else:
        roles_allow = ROLE_SCOPES[principal.roles[member_id]]
    return roles_allow & principal.scopes


def create_personal_token(
    session: Session,
    principal: Principal,
    *,
    name: str,
    scopes: Iterable[Scope],
    member_id: int | None,
    expires_at: datetime,
    now: datetime,
    context: RequestContext,
) -> tuple[AccessToken, str]:
    """Mint a token for the principal's user; the plain token is returned once, never stored."""
    if principal.via == "pat":
        # a leaked token must not be able to outlive its own revocation by minting others
        raise PermissionDenied("tokens are minted from a login session, not with another token")
    if member_id is not None and member_id not in principal.roles:
        raise InvalidInput("member_id is not one of your active members", field="member_id")
    if expires_at <= now or expires_at > now + MAX_PAT_LIFETIME:
        raise InvalidInput("a token expires in the future, within a year", field="expires_at")
    wanted = frozenset(scopes)
    beyond = wanted - mintable_scopes(principal, member_id)
    if beyond:
        raise PermissionDenied(
            "your roles do not grant " + ", ".join(sorted(beyond)), scopes=sorted(beyond)
        )
    active = session.scalar(
        select(func.count()).select_from(AccessToken).where(
            AccessToken.user_id == principal.user_id, AccessToken.revoked_at.is_(None)
        )
    )
    if (active or 0) >= MAX_ACTIVE_PATS:
        raise Conflict(f"at most {MAX_ACTIVE_PATS} active tokens; revoke unused ones first")

    plain = _new_secret(PAT_PREFIX)
    token = AccessToken(
        user_id=principal.user_id,
        member_id=member_id,
        name=name,
        token_hash=token_hash(plain),
        display_prefix=plain[: len(PAT_PREFIX) + DISPLAY_SECRET_CHARS] + "…",
        scopes=sorted(wanted),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    audit.record(session, actor=principal, action="token.create", target_type="access_token",
                 target_id=token.id, member_id=member_id, context=context,
                 details={"name": name, "scopes": token.scopes})
    return token, plain


def list_personal_tokens(session: Session, user_id: int) -> list[AccessToken]:
    """The user's tokens not revoked, oldest first (expired ones included, marked by date)."""
    return list(session.scalars(
        select(AccessToken)
        .where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None))
        .order_by(AccessToken.id)
    ))


def revoke_personal_tokens(
    session: Session,
    principal: Principal,
    *,
    token_id: int | None,
    now: datetime,
    context: RequestContext,
) -> int:
    """Revoke one of the user's tokens (another user's is NotFound), or all with None."""
    query = update(AccessToken).where(
        AccessToken.user_id == principal.user_id, AccessToken.revoked_at.is_(None)
    )
    if token_id is not None:
        owned = session.scalar(select(AccessToken.id).where(
            AccessToken.id == token_id, AccessToken.user_id == principal.user_id
        ))
        if owned is None:
            raise NotFound("no such token")
        query = query.where(AccessToken.id == token_id)
    count = int(session.execute(query.values(revoked_at=now)).rowcount)  # type: ignore[attr-defined]
    audit.record(session, actor=principal, action="token.revoke", target_type="access_token",
                 target_id=token_id if token_id is not None else "*", context=context,
                 details={"revoked": count})
    return count


def check_personal_token(session: Session, presented: str, now: datetime) -> AccessToken:
    """The live token matching `presented`; Unauthenticated if unknown, revoked or expired."""
    token = session.scalar(select(AccessToken).where(
        AccessToken.token_hash == token_hash(presented)
    ))
    if token is None:
        raise Unauthenticated("invalid access token")
    if token.revoked_at is not None:
        raise Unauthenticated("this access token has been revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthenticated("this access token has expired")
    return token


def token_scopes(token: AccessToken) -> frozenset[Scope]:
    known = {scope.value for scope in Scope}
    return frozenset(Scope(s) for s in token.scopes if s in known)


def needs_last_used_update(token: AccessToken, now: datetime) -> bool:
    return token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION


def record_last_used(session: Session, token: AccessToken, now: datetime) -> None:
    """Stamp the use, conditionally: concurrent requests of one token write it once."""
    session.execute(
        update(AccessToken)
        .where(
            AccessToken.id == token.id,
            AccessToken.last_used_at.is_(None)
            | (AccessToken.last_used_at <= now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


# --- refresh tokens -----------------------------------------------------------------------


class RefreshTokenReused(Unauthenticated):
    """A refresh token presented a second time: its whole family has been revoked."""

    def __init__(self) -> None:
        super().__init__("refresh token already used; every session of this login is revoked",
                         error="invalid_grant")


def issue_refresh_token(
    session: Session, user_id: int, *, ttl: timedelta, now: datetime, family: str | None = None
) -> str:
    """A new refresh token, starting a family (a login) or continuing one (a rotation)."""
    if family is None:
        # a login is a good moment to forget this user's dead tokens
        session.execute(delete(RefreshToken).where(
            RefreshToken.user_id == user_id, RefreshToken.expires_at < now
        ))
    plain = _new_secret(REFRESH_PREFIX)
    session.add(RefreshToken(
        user_id=user_id,
        family=family or secrets.token_hex(16),
        token_hash=token_hash(plain),
        created_at=now,
        expires_at=now + ttl,
    ))
    session.flush()
    return plain


def _revoke_family(session: Session, family: str, now: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


def rotate_refresh_token(
    session: Session, presented: str, *, ttl: timedelta, now: datetime, context: RequestContext
) -> tuple[int, str]:
    """Use a refresh token once: (user id, its successor).

    A token already used means two parties hold the chain (a thief and its owner): the whole
    family is revoked and audited in `session`, then RefreshTokenReused is raised; the caller
    must commit that although the answer is a refusal.
    """
    token = session.scalar(select(RefreshToken).where(
        RefreshToken.token_hash == token_hash(presented)
    ))
    if token is None or token.revoked_at is not None or token.expires_at <= now:
        raise Unauthenticated("invalid or expired refresh token", error="invalid_grant")
    # claim it atomically: of two concurrent uses exactly one wins, the other is a reuse
    claimed = session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if claimed != 1:
        _revoke_family(session, token.family, now)
        user = session.get(User, token.user_id)
        audit.record(session, actor=user.email if user else "unknown",
                     action="auth.refresh_reuse", target_type="user", target_id=token.user_id,
                     outcome=Outcome.denied, context=context, details={"family": token.family})
        raise RefreshTokenReused
    return token.user_id, issue_refresh_token(
        session, token.user_id, ttl=ttl, now=now, family=token.family
    )


def revoke_refresh_family(session: Session, presented: str, now: datetime) -> RefreshToken | None:
    """Log out: revoke the chain the token belongs to. Unknown tokens are silently ignored."""
    token = session.scalar(select(RefreshToken).where(
        RefreshToken.token_hash == token_hash(presented)
    ))
    if token is not None:
        _revoke_family(session, token.family, now)
    return token

