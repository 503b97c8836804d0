"""Bearer tokens from an external OpenID Connect provider, checked against its JWKS.

Only asymmetric algorithms are accepted (never HS*, never `none`): the key comes from the
provider's JWKS, the algorithm must be on the allow-list and fit the key's type (and the
key's own `alg` when it declares one). An unknown key id refetches the JWKS, at most once per
`jwks_min_refetch_seconds`, so forged kids cannot make the gateway hammer the provider.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.errors import Unauthenticated
from consortium.models import User
from gateway.auth.sessions import ISSUER as SESSION_ISSUER
from gateway.logging import log
from gateway.settings import OidcSettings

# algorithm -> the JWK key type it needs
ASYMMETRIC_ALGORITHMS: dict[str, str] = {
    **{f"RS{n}": "RSA" for n in (256, 384, 512)},
    **{f"PS{n}": "RSA" for n in (256, 384, 512)},
    **{f"ES{n}": "EC" for n in (256, 384, 512)},
    "EdDSA": "OKP",
}
JWKS_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1 << 20


class OidcVerifier:
    """Verifies one provider's tokens; holds its JWKS cache (one per app, shared by threads)."""

    def __init__(self, settings: OidcSettings, clock: Callable[[], float] = time.monotonic) -> None:
        refused = [a for a in settings.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if refused or not settings.algorithms:
            raise ValueError(f"oidc.algorithms must be asymmetric algorithms, not {refused}")
        if settings.issuer == SESSION_ISSUER:
            raise ValueError(f"oidc.issuer must differ from the gateway's own ({SESSION_ISSUER})")
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    def _fetch(self) -> None:
        """Reload the JWKS, unless it was loaded less than the minimum interval ago."""
        with self._lock:
            now = self._clock()
            if (self._fetched_at is not None
                    and now - self._fetched_at < self.settings.jwks_min_refetch_seconds):
                return
            self._fetched_at = now
            try:
                response = httpx.get(self.settings.jwks_url, timeout=JWKS_TIMEOUT_SECONDS,
                                     follow_redirects=False)
                response.raise_for_status()
                if len(response.content) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS too large")
                keys = response.json()["keys"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning("oidc jwks fetch failed", url=self.settings.jwks_url, error=str(exc))
                return  # keep the keys we had
            self._keys = {
                str(k["kid"]): k for k in keys
                if isinstance(k, dict) and "kid" in k and k.get("use", "sig") == "sig"
            }

    def _key_for(self, header: dict[str, Any]) -> jwt.PyJWK:
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            raise Unauthenticated("token algorithm not accepted")
        if not isinstance(kid, str):
            raise Unauthenticated("token names no signing key")
        if kid not in self._keys:
            self._fetch()
        jwk = self._keys.get(kid)
        if jwk is None:
            raise Unauthenticated("unknown signing key")
        if jwk.get("kty") != ASYMMETRIC_ALGORITHMS[alg] or jwk.get("alg", alg) != alg:
            raise Unauthenticated("token algorithm does not fit its key")
        try:
            return jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("unusable signing key") from exc

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once signature, issuer, audience and dates are checked."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed token") from exc
        key = self._key_for(header)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                issuer=self.settings.issuer,
                audience=self.settings.audience,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token refused: {exc}") from exc
        return claims

    def user_for(self, session: Session, claims: dict[str, Any]) -> User:
        """The account of a verified identity: by verified email, else by stored subject."""
        subject = str(claims["sub"])
        email = claims.get(self.settings.email_claim)
        if claims.get("email_verified") is True and isinstance(email, str):
            user = session.scalar(select(User).where(User.email_normalized == email.lower()))
            # an account already bound to another subject of the provider is not taken over
            if user is not None and user.oidc_subject in (None, subject):
                return user
        user = session.scalar(select(User).where(User.oidc_subject == subject))
        if user is None:
            raise Unauthenticated("no account matches this identity")
        return user
