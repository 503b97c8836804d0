"""The invitation page: the link of an invitation mail, where the invitee creates an account
(name and password) or signs in with the existing one to accept. Public like the API's accept
route: the token in the URL is the invitation's credential, so the pages send no referrer and
are never cached; the only cookie they set is the forms' CSRF token."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from babel.support import LazyProxy
from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from consortium import service
from consortium.authz import Principal
from consortium.errors import DomainError, NotFound
from consortium.models import User
from consortium.schemas import MIN_PASSWORD_LENGTH, InvitationAccept
from consortium.service import InvitationGone, InvitationNeedsSignIn
from gateway.api.deps import ContextDep, DatabaseDep, SessionDep, SettingsDep
from gateway.api.errors import status_for
from gateway.auth import login
from gateway.auth.principal import principal_for_user
from gateway.ui.i18n import in_viewers_language, lazy_gettext
from gateway.ui.pages import page

# The token is in the URL: no referrer carries it elsewhere (the layout's headers keep the page
# out of every cache).
PAGE_HEADERS = {"Referrer-Policy": "no-referrer"}

router = APIRouter(prefix="/ui", include_in_schema=False)
Token = Annotated[str, PathParam(max_length=128)]


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return page(request, template, status, headers=PAGE_HEADERS, **context)


def _invitation_form(request: Request, session: Session, token: str, *, status: int = 200,
                     error: str | LazyProxy | None = None, name: str = "",
                     email: str | None = None) -> HTMLResponse:
    try:
        preview = service.preview_invitation(session, token)
    except DomainError as exc:
        return _unusable(request, exc)
    return _page(request, "invitation.html", status, invitation=preview, error=error,
                 name=name, email=preview.email if email is None else email,
                 min_length=MIN_PASSWORD_LENGTH)


def _unusable(request: Request, error: DomainError) -> HTMLResponse:
    if isinstance(error, InvitationGone):
        return _page(request, "gone.html", 410, message=in_viewers_language(error.detail))
    if isinstance(error, NotFound):
        return _page(request, "not_found.html", 404)
    raise error


@router.get("/invitations/{token}", response_class=HTMLResponse)
def invitation_page(*, request: Request, token: Token, session: SessionDep) -> HTMLResponse:
    """Who invites the visitor, with which role, and the two ways to accept."""
    return _invitation_form(request, session, token)


def _sentence(exc: DomainError) -> LazyProxy:
    """The refusal's detail as a sentence of the page, in its viewer's language."""
    def said() -> str:
        text = str(in_viewers_language(exc.detail))
        return text[:1].upper() + text[1:].rstrip(".") + "."
    return LazyProxy(said, enable_cache=False)


def _parse(name: str, password: str, confirmation: str) -> InvitationAccept | LazyProxy:
    """The service's input for a new account, or what is wrong with the form."""
    if password != confirmation:
        return lazy_gettext("The password and its confirmation differ.")
    try:
        return InvitationAccept(name=name, password=password)
    except ValidationError:  # its strength is the service's to judge (once the token is)
        return lazy_gettext("Give a name and a password of at least %(n)s characters.",
                            n=MIN_PASSWORD_LENGTH)


# The page's words for the service's refusal of a new account (see SIGN_IN_OR_CREATE).
SIGN_IN_BELOW = lazy_gettext("No new account can be made for this email here. If it already "
                             "has an account, sign in with it below to accept.")


@router.post("/invitations/{token}", response_class=HTMLResponse)
def accept_invitation(*, request: Request, token: Token, session: SessionDep,
                      database: DatabaseDep, settings: SettingsDep, context: ContextDep,
                      intent: Annotated[Literal["create", "sign_in"], Form()] = "create",
                      name: Annotated[str, Form(max_length=200)] = "",
                      email: Annotated[str, Form(max_length=320)] = "",
                      password: Annotated[str, Form(max_length=1024)] = "",
                      confirmation: Annotated[str, Form(max_length=1024)] = "",
                      ) -> HTMLResponse:
    """Create the account, or sign in and join with it, through the service (audited as the
    API's accept); on an error the form again, without the password."""
    signed_in: Principal | None = None
    try:
        if intent == "sign_in":
            # first, before the request's session is used: the sign-in commits its own
            # transactions (throttle, audit), which on SQLite would wait on that session's lock
            user_id = login.check_password(database, settings, email=email, password=password,
                                           context=context)
            signed_in = principal_for_user(session, session.get_one(User, user_id))
            data: InvitationAccept | LazyProxy = InvitationAccept()
        else:
            data = _parse(name, password, confirmation)
        if isinstance(data, LazyProxy):
            return _invitation_form(request, session, token, status=422, error=data, name=name)
        user, _ = service.accept_invitation(session, token, data, signed_in=signed_in,
                                            context=context)
    except DomainError as exc:
        session.rollback()  # nothing of a refused acceptance is committed
        if isinstance(exc, InvitationGone | NotFound):
            return _unusable(request, exc)
        error = SIGN_IN_BELOW if isinstance(exc, InvitationNeedsSignIn) else _sentence(exc)
        return _invitation_form(request, session, token, status=status_for(exc), error=error,
                                name=name, email=email if intent == "sign_in" else None)
    return _page(request, "accepted.html", email=user.email)
