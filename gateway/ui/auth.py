"""Signing in to the pages: email and password (the API's own checks, throttling included) or
the configured OIDC provider, a session cookie, and signing out.

The cookie carries a personal access token minted for the sign-in ("web session", its scopes
the person's roles): hashed in the database, expiring, listed with the person's other tokens and
revoked server-side at sign-out, and resolved to a Principal like any other credential, so the
pages have exactly the API's rights.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consortium import audit, tokens
from consortium.authz import Principal
from consortium.base import utcnow
from consortium.errors import Throttled, Unauthenticated
from consortium.models import User
from gateway.api.deps import ContextDep, DatabaseDep, SessionDep, SettingsDep, is_https
from gateway.auth import login
from gateway.auth.authenticator import Authenticator
from gateway.auth.principal import principal_for_user
from gateway.settings import Settings
from gateway.ui import i18n
from gateway.ui.pages import PageRoute, SignInRequired, local_path, page, visitor_locale

SESSION_COOKIE = "hpcgw_session"
SESSION_LIFETIME = timedelta(hours=12)
SESSION_TOKEN_NAME = "web session"  # noqa: S105 (a name, not a secret)
LOCALE_COOKIE_LIFETIME = timedelta(days=365)

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person of a page: the principal decides, the rest is for the layout."""

    principal: Principal
    name: str
    locale: str


def principal_for_cookie(request: Request, credential: str) -> Principal:
    """The one place the cookie's credential becomes a Principal: the API's authenticator
    (Unauthenticated if it is unknown, revoked or expired). Called from a worker thread."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.principal(credential)


def get_viewer(request: Request, session: SessionDep) -> Viewer | None:
    """The signed-in person, or None for a visitor (an expired or revoked cookie included)."""
    credential = request.cookies.get(SESSION_COOKIE)
    viewer = None
    if credential:
        try:
            principal = principal_for_cookie(request, credential)
        except Unauthenticated:
            principal = None
        if principal is not None:
            user = session.get_one(User, principal.user_id)
            viewer = Viewer(principal, user.name,
                            i18n.supported(user.locale) or visitor_locale(request))
    request.state.viewer = viewer
    return viewer


MaybeSignedIn = Annotated[Viewer | None, Depends(get_viewer)]


def signed_in(viewer: MaybeSignedIn) -> Viewer:
    if viewer is None:
        raise SignInRequired
    return viewer


SignedIn = Annotated[Viewer, Depends(signed_in)]


def _set_cookie(response: Response, request: Request, *, settings: Settings, name: str,
                value: str, max_age: timedelta) -> None:
    response.set_cookie(name, value, max_age=int(max_age.total_seconds()), path="/",
                        httponly=True, samesite="lax", secure=is_https(request, settings))


def _sign_in_page(request: Request, status: int = 200, *,
                  headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    oidc = request.app.state.settings.oidc
    return page(request, "sign_in.html", status, headers=headers,
                oidc_enabled=oidc is not None and oidc.authorization_url is not None,
                **context)


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, viewer: MaybeSignedIn,
                 next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    if viewer is not None:
        return RedirectResponse(local_path(next), status_code=303)
    return _sign_in_page(request, next=local_path(next))


def start_session(request: Request, *, database: DatabaseDep, settings: Settings,
                  context: audit.RequestContext, user_id: int, target: str,
                  via: str) -> Response:
    """Mint the session's token for a person whose identity is established, audit the sign-in,
    and send the person on with the cookie."""
    now = utcnow()
    with database.transaction() as session:
        principal = principal_for_user(session, session.get_one(User, user_id))
        _, credential = tokens.create_personal_token(
            session, principal, name=SESSION_TOKEN_NAME,
            scopes=tokens.mintable_scopes(principal, None), member_id=None,
            expires_at=now + SESSION_LIFETIME, now=now, context=context)
        audit.record(session, actor=principal, action="auth.login", target_type="user",
                     target_id=user_id, context=context, details={"via": via})
    response = RedirectResponse(target, status_code=303)
    _set_cookie(response, request, settings=settings, name=SESSION_COOKIE, value=credential,
                max_age=SESSION_LIFETIME)
    return response


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(*, request: Request, database: DatabaseDep, settings: SettingsDep,
            context: ContextDep,
            email: Annotated[str, Form(max_length=320)] = "",
            password: Annotated[str, Form(max_length=1024)] = "",
            next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    """The API's password check (throttle and audit of refusals included); no request session
    is open meanwhile (the check commits its own transactions)."""
    target = local_path(next)
    try:
        user_id = login.check_password(database, settings, email=email, password=password,
                                       context=context)
    except Throttled as exc:
        return _sign_in_page(request, 429, next=target, email=email, error="throttled",
                             headers={"Retry-After": str(exc.retry_after)})
    except Unauthenticated:
        return _sign_in_page(request, 401, next=target, email=email, error="credentials")
    return start_session(request, database=database, settings=settings, context=context,
                         user_id=user_id, target=target, via="password")


@router.post("/sign-out")
def sign_out(viewer: SignedIn, session: SessionDep, context: ContextDep) -> Response:
    """The session's token is revoked: the cookie is worthless even if it was copied."""
    tokens.revoke_personal_tokens(session, viewer.principal, token_id=viewer.principal.token_id,
                                  now=utcnow(), context=context)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language")
def choose_language(*, request: Request, viewer: MaybeSignedIn, session: SessionDep,
                    settings: SettingsDep,
                    lang: Annotated[str, Form(max_length=8)],
                    next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    """Remembered for the person (their account) and for the browser (a cookie)."""
    locale = i18n.supported(lang) or i18n.DEFAULT_LOCALE
    if viewer is not None:
        session.get_one(User, viewer.principal.user_id).locale = locale
    response = RedirectResponse(local_path(next), status_code=303)
    _set_cookie(response, request, settings=settings, name=i18n.LOCALE_COOKIE, value=locale,
                max_age=LOCALE_COOKIE_LIFETIME)
    return response
