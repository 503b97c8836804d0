"""Signing in to the pages with the configured OpenID Connect provider: the authorization-code
flow with PKCE (S256), state and nonce. The provider's ID token is checked by the API's own
verifier (gateway.auth.oidc: JWKS, issuer, audience = this client's id) and matched to an
account the way a bearer token is; the session is then the password sign-in's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from consortium.errors import NotFound, Unauthenticated
from gateway.api.deps import ContextDep, DatabaseDep, SettingsDep, is_https
from gateway.auth.oidc import OidcVerifier
from gateway.settings import OidcSettings, Settings
from gateway.ui.auth import start_session
from gateway.ui.pages import PageRoute, local_path, page

FLOW_COOKIE = "hpcgw_oidc"
FLOW_SECONDS = 600  # from leaving for the provider to coming back
CALLBACK = "/ui/sign-in/oidc/callback"
TOKEN_TIMEOUT_SECONDS = 10.0

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)


def _configured(settings: Settings) -> OidcSettings:
    oidc = settings.oidc
    if oidc is None or not (oidc.authorization_url and oidc.token_url and oidc.client_id):
        raise NotFound("no identity provider is configured for the pages")
    return oidc


def _signer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt="ui-oidc-flow")


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@router.get("/sign-in/oidc")
def start(request: Request, settings: SettingsDep,
          next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    """To the provider, with this flow's secrets kept in a signed, short-lived cookie."""
    oidc = _configured(settings)
    flow = {"state": secrets.token_urlsafe(24), "nonce": secrets.token_urlsafe(24),
            "verifier": secrets.token_urlsafe(48), "next": local_path(next)}
    query = urlencode({
        "response_type": "code", "client_id": oidc.client_id, "scope": "openid email profile",
        "redirect_uri": str(request.url_for("oidc_callback")), "state": flow["state"],
        "nonce": flow["nonce"], "code_challenge": _challenge(flow["verifier"]),
        "code_challenge_method": "S256"})
    response = RedirectResponse(f"{oidc.authorization_url}?{query}", status_code=303)
    response.set_cookie(FLOW_COOKIE, _signer(settings).dumps(flow), max_age=FLOW_SECONDS,
                        path=CALLBACK, httponly=True, samesite="lax",
                        secure=is_https(request, settings))
    return response


def _id_token(oidc: OidcSettings, code: str, verifier: str, redirect_uri: str) -> str:
    """The provider's ID token for the code (the PKCE verifier proves this flow asked)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": str(oidc.client_id), "code_verifier": verifier}
    if oidc.client_secret is not None:
        form["client_secret"] = oidc.client_secret.get_secret_value()
    try:
        answer = httpx.post(str(oidc.token_url), data=form, timeout=TOKEN_TIMEOUT_SECONDS,
                            follow_redirects=False)
        answer.raise_for_status()
        token: Any = answer.json()["id_token"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise Unauthenticated("the identity provider did not answer with an ID token") from exc
    if not isinstance(token, str):
        raise Unauthenticated("the identity provider did not answer with an ID token")
    return token


@router.get(CALLBACK.removeprefix("/ui"), name="oidc_callback")
def callback(*, request: Request, database: DatabaseDep, settings: SettingsDep,
             context: ContextDep,
             code: Annotated[str, Query(max_length=4096)] = "",
             state: Annotated[str, Query(max_length=512)] = "") -> Response:
    oidc = _configured(settings)
    try:
        flow = _signer(settings).loads(request.cookies.get(FLOW_COOKIE, ""),
                                       max_age=FLOW_SECONDS)
        if not (code and hmac.compare_digest(str(flow["state"]), state)):
            raise Unauthenticated("this sign-in was not started here")
        verifier: OidcVerifier = request.app.state.oidc
        claims = verifier.verify(_id_token(oidc, code, str(flow["verifier"]),
                                           str(request.url_for("oidc_callback"))))
        if not hmac.compare_digest(str(claims.get("nonce", "")), str(flow["nonce"])):
            raise Unauthenticated("the ID token is not this sign-in's")
        with database.transaction(write=False) as session:
            user_id = verifier.user_for(session, claims).id
    except (BadSignature, Unauthenticated, KeyError, TypeError):
        return page(request, "sign_in.html", 401, error="oidc", next="/", email="",
                    oidc_enabled=True)
    response = start_session(request, database=database, settings=settings, context=context,
                             user_id=user_id, target=local_path(str(flow["next"])), via="oidc")
    response.delete_cookie(FLOW_COOKIE, path=CALLBACK)
    return response
