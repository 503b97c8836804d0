"""Session access tokens: short-lived JWTs signed with the gateway's secret (HS256)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from consortium.base import utcnow
from consortium.errors import Unauthenticated
from gateway.settings import Settings

ALGORITHM = "HS256"
ISSUER = "hpcgw"
AUDIENCE = "hpcgw-api"


def issue_access_token(settings: Settings, user_id: int, ttl: timedelta | None = None) -> str:
    now = utcnow()
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user_id),
        "iat": now,
        "nbf": now,
        "exp": now + (ttl or settings.access_token_ttl),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)


def verify_access_token(settings: Settings, token: str) -> tuple[int, datetime]:
    """The user id and expiry of a valid session token; Unauthenticated otherwise."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=AUDIENCE,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
        return int(claims["sub"]), datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (jwt.PyJWTError, ValueError) as exc:
        raise Unauthenticated("invalid or expired access token") from exc
