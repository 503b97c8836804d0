"""Login (OAuth2 password and refresh-token grants), logout, and who the caller is."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Response
from pydantic import BaseModel
from sqlalchemy import select

from consortium.errors import InvalidInput
from consortium.models import Member, Membership, User
from gateway.api.deps import Caller, ContextDep, DatabaseDep, SessionDep, SettingsDep
from gateway.api.errors import problems
from gateway.auth import login
from gateway.auth.schemas import MeMembership, MeOut, TokenResponse

router = APIRouter(tags=["auth"])

# no control characters (PostgreSQL refuses NUL in text: that would be a 500, not a 401)
ONE_LINE = r"^[^\x00-\x1f\x7f]+$"
# RFC 6749 section 5.1: responses carrying tokens must not be cached
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post("/auth/token", operation_id="auth-token", response_model=TokenResponse,
             responses=problems(401, 422, 429))
def issue_token(
    *,
    database: DatabaseDep,
    settings: SettingsDep,
    context: ContextDep,
    response: Response,
    grant_type: Annotated[Literal["password", "refresh_token"], Form()],
    username: Annotated[str | None, Form(max_length=320, pattern=ONE_LINE,
                                         description="your email")] = None,
    password: Annotated[str | None, Form(max_length=1024)] = None,
    refresh_token: Annotated[str | None, Form(max_length=200)] = None,
) -> TokenResponse:
    """Log in with email and password, or renew with a refresh token (which is used up).

    Failed logins are throttled per account and per client address (429 with Retry-After);
    a refresh token presented twice revokes every token of its login.
    """
    response.headers.update(NO_STORE)
    if grant_type == "password":
        if not username or password is None:
            raise InvalidInput("the password grant needs username and password")
        issued = login.login_with_password(
            database, settings, email=username, password=password, context=context
        )
    else:
        if not refresh_token:
            raise InvalidInput("the refresh_token grant needs refresh_token")
        issued = login.refresh_session(
            database, settings, refresh_token=refresh_token, context=context
        )
    return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in,
                         refresh_token=issued.refresh_token)


class LoginMethods(BaseModel):
    """How a client logs in here; with an OIDC provider, a CLI runs the device flow against
    `oidc_issuer` (its discovery document) as the public client `oidc_client_id`."""

    password: bool = True
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None


@router.get("/auth/config", operation_id="auth-config", response_model=LoginMethods)
def login_methods(settings: SettingsDep) -> LoginMethods:
    """Public: the login methods of this gateway (no secret in it)."""
    oidc = settings.oidc
    return LoginMethods(oidc_issuer=oidc.issuer if oidc else None,
                        oidc_client_id=oidc.audience if oidc else None)


@router.post("/auth/logout", operation_id="auth-logout", status_code=204, responses=problems(422))
def logout(
    database: DatabaseDep,
    context: ContextDep,
    refresh_token: Annotated[str, Form(max_length=200)],
) -> None:
    """End a login: its refresh token and every rotation of it stop working (access tokens
    already issued expire on their own within minutes). Unknown tokens are ignored."""
    login.logout(database, refresh_token=refresh_token, context=context)


@router.get("/me", operation_id="me-get", response_model=MeOut, responses=problems(401))
def me(principal: Caller, session: SessionDep) -> MeOut:
    """The caller, its memberships, and what the credential of this request allows."""
    user = session.get_one(User, principal.user_id)
    rows = session.execute(
        select(Member.id, Member.slug, Member.name, Member.status, Membership.role)
        .join(Member, Member.id == Membership.member_id)
        .where(Membership.user_id == user.id)
        .order_by(Member.slug)
    ).all()
    return MeOut(
        id=user.id,
        email=user.email,
        name=user.name,
        is_admin=user.is_admin,
        memberships=[
            MeMembership(member_id=member_id, member_slug=slug, member_name=name,
                          member_status=status, role=role)
            for member_id, slug, name, status, role in rows
        ],
        scopes=sorted(principal.held_scopes()),
        via=principal.via,
        token_member_id=principal.token_member_id,
    )
