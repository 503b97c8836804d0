"""From a credential to a Principal (the caller, its roles and its scopes), read in a session.

Three kinds of credential: personal access tokens (`hpcgw_pat_...`), the gateway's own
session JWTs, and, when configured, an external OIDC provider's JWTs. The two JWT kinds are
told apart by their (unverified) `iss` claim only to pick the verifier; each verifier then
checks everything with its own keys and algorithms, never trusting the token's header. Callers
authenticate through gateway.auth.authenticator, which keeps what is read here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import jwt
from sqlalchemy import and_, bindparam, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from consortium import tokens
from consortium.authz import Principal
from consortium.base import utcnow
from consortium.errors import Unauthenticated
from consortium.models import Member, Membership, MemberStatus, User
from gateway.auth.oidc import OidcVerifier
from gateway.auth.sessions import ISSUER, verify_access_token
from gateway.logging import log
from gateway.settings import Settings


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None for anything else."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


# The user and its roles in one query, one row per membership in an active member (a suspended
# member's rights end at once); built once, as it runs on every request.
_USER_AND_ROLES = (
    select(User.email, User.is_admin, User.is_active, Membership.member_id, Membership.role)
    .select_from(User)
    .outerjoin(Membership.__table__.join(Member.__table__, and_(
        Member.id == Membership.member_id, Member.status == MemberStatus.active)),
        Membership.user_id == User.id)
    .where(User.id == bindparam("user_id"))
)


def principal_for_user(session: Session, user: User, **credential: object) -> Principal:
    """The user's roles in its active members."""
    return _principal(session, user.id, "invalid access token", **credential)


def _principal(session: Session, user_id: int, unknown: str, **credential: object) -> Principal:
    """The user and its active roles; `unknown` is the refusal when no such user exists."""
    rows = session.execute(_USER_AND_ROLES, {"user_id": user_id}).all()
    if not rows:
        raise Unauthenticated(unknown)
    email, is_admin, is_active = rows[0][:3]
    if not is_active:
        raise Unauthenticated("this account is disabled")
    return Principal(
        user_id=user_id,
        email=email,
        is_admin=is_admin,
        roles={member_id: role for *_, member_id, role in rows if member_id is not None},
        **credential,  # type: ignore[arg-type]
    )


class PrincipalRead(NamedTuple):
    """A principal, and until when it may be used without being read again: its credential's
    expiry or, for a PAT, the next stamp of its last use (None: no limit of its own)."""

    principal: Principal
    good_until: datetime | None


def _pat_principal(session: Session, presented: str) -> PrincipalRead:
    now = utcnow()
    token = tokens.check_personal_token(session, presented, now)
    last_used = token.last_used_at
    if last_used is None or tokens.needs_last_used_update(token, now):
        last_used = now  # stamped now, or retried by the next read
        try:
            with session.begin_nested():
                tokens.record_last_used(session, token, now)
        except OperationalError as exc:
            # a usage timestamp never fails a request (SQLite may refuse to turn a reading
            # transaction into a writing one under concurrent writes); next use retries
            log.warning("token last_used_at not recorded", token_id=token.id, error=str(exc))
    principal = _principal(
        session, token.user_id, "invalid access token", scopes=tokens.token_scopes(token),
        token_member_id=token.member_id, via="pat", token_id=token.id,
        expires_at=token.expires_at,
    )
    next_stamp = last_used + tokens.LAST_USED_RESOLUTION
    return PrincipalRead(principal, min(next_stamp, token.expires_at or next_stamp))


def _unverified_issuer(token: str) -> object:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError as exc:
        raise Unauthenticated("malformed access token") from exc


def read_principal(session: Session, token: str, settings: Settings,
                   oidc: OidcVerifier | None) -> PrincipalRead:
    """The principal of `token`; Unauthenticated when it is not good."""
    if token.startswith(tokens.PAT_PREFIX):
        return _pat_principal(session, token)
    issuer = _unverified_issuer(token)
    if issuer == ISSUER:
        user_id, expires_at = verify_access_token(settings, token)
        return PrincipalRead(_principal(session, user_id, "invalid or expired access token",
                                        expires_at=expires_at), expires_at)
    if oidc is not None and issuer == oidc.issuer:
        claims = oidc.verify(token)
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
        return PrincipalRead(principal_for_user(session, oidc.user_for(session, claims),
                                                via="oidc", expires_at=expires_at), expires_at)
    raise Unauthenticated("token from an unknown issuer")
