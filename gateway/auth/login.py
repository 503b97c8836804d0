"""Login, refresh and logout: the flows behind POST /auth/token and /auth/logout.

They run their own transactions rather than the request's: a refused login must still commit
its throttle count and its audit event, and a reused refresh token its family's revocation,
while the answer is an error. The password is checked outside any transaction (argon2 takes
tens of milliseconds; no lock is held meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from consortium import audit, throttle, tokens
from consortium.audit import RequestContext
from consortium.base import utcnow
from consortium.errors import Throttled, Unauthenticated
from consortium.models import Outcome, User
from consortium.passwords import hash_password, needs_rehash, verify_password
from gateway.auth.sessions import issue_access_token
from gateway.db import Database
from gateway.logging import log
from gateway.settings import Settings

BAD_CREDENTIALS = "incorrect email or password"


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str


def _issue(settings: Settings, user_id: int, refresh_token: str) -> IssuedTokens:
    return IssuedTokens(
        access_token=issue_access_token(settings, user_id),
        expires_in=int(settings.access_token_ttl.total_seconds()),
        refresh_token=refresh_token,
    )


def check_password(
    database: Database,
    settings: Settings,
    *,
    email: str,
    password: str,
    context: RequestContext,
    now: datetime | None = None,
) -> int:
    """The id of the active account with this email and password. Unknown email and wrong
    password take the same path, the same time and the same answer; a throttled attempt never
    reaches argon2. Runs its own transactions: call it with none of the caller's open (SQLite
    would wait on the caller's own write lock)."""
    now = now or utcnow()
    policy = settings.login_throttle
    normalized = email.strip().lower()
    try:
        with database.transaction() as session:
            throttle.begin_attempt(session, policy, email=normalized,
                                   address=context.client_addr, now=now)
            user = session.scalar(select(User).where(User.email_normalized == normalized))
            user_id = user.id if user else None
            password_hash = user.password_hash if user else None
    except Throttled:
        # not an audit event: a throttled attempt checked nothing, and writing one per
        # refused request would hand an attacker a cheap way to fill the database
        log.warning("login throttled", email=normalized, client_addr=context.client_addr)
        raise

    if not verify_password(password_hash, password):
        with database.transaction() as session:
            audit.record(session, actor=normalized, action="auth.login", target_type="user",
                         target_id=user_id, outcome=Outcome.denied, context=context,
                         details={"reason": "bad_credentials"})
        raise Unauthenticated(BAD_CREDENTIALS, error="invalid_grant")

    # hashing parameters were raised since this hash was made: upgrade it (hashed before the
    # transaction, so no lock is held while argon2 works)
    upgraded = hash_password(password) if password_hash and needs_rehash(password_hash) else None
    with database.transaction() as session:
        user = session.get(User, user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("this account is disabled", error="invalid_grant")
        if upgraded and user.password_hash == password_hash:
            user.password_hash = upgraded
        throttle.attempt_succeeded(session, policy, email=normalized,
                                   address=context.client_addr, now=now)
        throttle.prune(session, policy, now)
        return user.id


def login_with_password(
    database: Database,
    settings: Settings,
    *,
    email: str,
    password: str,
    context: RequestContext,
    now: datetime | None = None,
) -> IssuedTokens:
    """Tokens for a right email and password (see check_password)."""
    now = now or utcnow()
    user_id = check_password(database, settings, email=email, password=password,
                             context=context, now=now)
    with database.transaction() as session:
        refresh = tokens.issue_refresh_token(session, user_id, ttl=settings.refresh_token_ttl,
                                             now=now)
        audit.record(session, actor=session.get_one(User, user_id).email, action="auth.login",
                     target_type="user", target_id=user_id, context=context)
    return _issue(settings, user_id, refresh)


def refresh_session(
    database: Database,
    settings: Settings,
    *,
    refresh_token: str,
    context: RequestContext,
    now: datetime | None = None,
) -> IssuedTokens:
    """New tokens for a refresh token, which is used up; a reuse revokes its whole family."""
    now = now or utcnow()
    reused: tokens.RefreshTokenReused | None = None
    with database.transaction() as session:
        try:
            user_id, successor = tokens.rotate_refresh_token(
                session, refresh_token, ttl=settings.refresh_token_ttl, now=now, context=context
            )
        except tokens.RefreshTokenReused as exc:
            reused = exc  # leave the block normally: the revocation is committed
        else:
            user = session.get(User, user_id)
            if user is None or not user.is_active:
                raise Unauthenticated("this account is disabled", error="invalid_grant")
    if reused is not None:
        log.warning("refresh token reused", client_addr=context.client_addr)
        raise reused
    return _issue(settings, user_id, successor)


def logout(
    database: Database, *, refresh_token: str, context: RequestContext,
    now: datetime | None = None,
) -> None:
    """Revoke the login the refresh token belongs to (every rotation of it)."""
    now = now or utcnow()
    with database.transaction() as session:
        token = tokens.revoke_refresh_family(session, refresh_token, now)
        if token is not None:
            user = session.get(User, token.user_id)
            audit.record(session, actor=user.email if user else "unknown", action="auth.logout",
                         target_type="user", target_id=token.user_id, context=context)
