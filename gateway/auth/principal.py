"""From a request's credentials to a Principal (the caller, its roles and its scopes).

Three kinds of bearer token: personal access tokens (`hpcgw_pat_...`), the gateway's own
session JWTs, and, when configured, an external OIDC provider's JWTs. The two JWT kinds are
told apart by their (unverified) `iss` claim only to pick the verifier; each verifier then
checks everything with its own keys and algorithms, never trusting the token's header.
"""

from __future__ import annotations

import jwt
from fastapi import Request
from sqlalchemy import select
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


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("a bearer token is required")
    return token.strip()


def principal_for_user(session: Session, user: User, **credential: object) -> Principal:
    """The user's roles in its active members: a suspended member's rights end at once."""
    if not user.is_active:
        raise Unauthenticated("this account is disabled")
    rows = session.execute(
        select(Membership.member_id, Membership.role)
        .join(Member, Member.id == Membership.member_id)
        .where(Membership.user_id == user.id, Member.status == MemberStatus.active)
    ).all()
    return Principal(
        user_id=user.id,
        email=user.email,
        is_admin=user.is_admin,
        roles=dict(rows),
        **credential,  # type: ignore[arg-type]
    )


def _pat_principal(session: Session, presented: str) -> Principal:
    now = utcnow()
    token = tokens.check_personal_token(session, presented, now)
    if tokens.needs_last_used_update(token, now):
        try:
            with session.begin_nested():
                tokens.record_last_used(session, token, now)
        except OperationalError as exc:
            # a usage timestamp never fails a request (SQLite may refuse to turn a reading
            # transaction into a writing one under concurrent writes); next use retries
            log.warning("token last_used_at not recorded", token_id=token.id, error=str(exc))
    user = session.get(User, token.user_id)
    if user is None:
        raise Unauthenticated("invalid access token")
    return principal_for_user(
        session, user, scopes=tokens.token_scopes(token), token_member_id=token.member_id,
        via="pat", token_id=token.id,
    )


def _unverified_issuer(token: str) -> object:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError as exc:
        raise Unauthenticated("malformed access token") from exc


def authenticate(request: Request, session: Session, settings: Settings) -> Principal:
    token = _bearer(request)
    if token.startswith(tokens.PAT_PREFIX):
        return _pat_principal(session, token)
    issuer = _unverified_issuer(token)
    if issuer == ISSUER:
        user = session.get(User, verify_access_token(settings, token))
        if user is None:
            raise Unauthenticated("invalid or expired access token")
        return principal_for_user(session, user)
    oidc: OidcVerifier | None = getattr(request.app.state, "oidc", None)
    if oidc is not None and issuer == oidc.issuer:
        claims = oidc.verify(token)
        return principal_for_user(session, oidc.user_for(session, claims), via="oidc")
    raise Unauthenticated("token from an unknown issuer")
