"""The invitation page: the link of an invitation mail, where the invitee sets a name and a
password. Public like the API's accept route: the token in the URL is the credential, so the
pages set no cookie, send no referrer and are never cached."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from pydantic import ValidationError
from sqlalchemy.orm import Session

from consortium import service
from consortium.errors import Conflict, DomainError, NotFound
from consortium.schemas import MIN_PASSWORD_LENGTH, InvitationAccept
from consortium.service import InvitationGone
from gateway.api.deps import ContextDep, SessionDep

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_PATH = "/ui/static"

templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"),
                                            autoescape=True))

# The token is in the URL: no referrer carries it elsewhere, no cache keeps the page.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter(prefix="/ui", include_in_schema=False)
Token = Annotated[str, PathParam(max_length=128)]


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"static": STATIC_PATH, **context},
                                      status_code=status, headers=PAGE_HEADERS)


def _invitation_form(request: Request, session: Session, token: str, *, status: int = 200,
                     error: str | None = None, name: str = "") -> HTMLResponse:
    try:
        preview = service.preview_invitation(session, token)
    except DomainError as exc:
        return _unusable(request, exc)
    return _page(request, "invitation.html", status, invitation=preview, error=error,
                 name=name, min_length=MIN_PASSWORD_LENGTH)


def _unusable(request: Request, error: DomainError) -> HTMLResponse:
    if isinstance(error, InvitationGone):
        return _page(request, "gone.html", 410, message=str(error))
    if isinstance(error, NotFound):
        return _page(request, "not_found.html", 404)
    raise error


@router.get("/invitations/{token}", response_class=HTMLResponse)
def invitation_page(*, request: Request, token: Token, session: SessionDep) -> HTMLResponse:
    """Who invites the visitor, with which role, and the form to accept."""
    return _invitation_form(request, session, token)


def _parse(name: str, password: str, confirmation: str) -> InvitationAccept | str:
    """The service's input, or what is wrong with the form."""
    if not (name or password or confirmation):
        return InvitationAccept()  # an account with this email exists: nothing to set
    if password != confirmation:
        return "The password and its confirmation differ."
    try:
        return InvitationAccept(name=name, password=password)
    except ValidationError:
        return f"Give a name and a password of at least {MIN_PASSWORD_LENGTH} characters."


@router.post("/invitations/{token}", response_class=HTMLResponse)
def accept_invitation(*, request: Request, token: Token, session: SessionDep,
                      context: ContextDep, name: Annotated[str, Form(max_length=200)] = "",
                      password: Annotated[str, Form(max_length=1024)] = "",
                      confirmation: Annotated[str, Form(max_length=1024)] = "",
                      ) -> HTMLResponse:
    """Accept through the service (audited as the API's accept); on an error the form again,
    without the password."""
    data, status = _parse(name, password, confirmation), 422
    if isinstance(data, InvitationAccept):
        try:
            user = service.accept_invitation(session, token, data, context=context)
        except DomainError as exc:
            session.rollback()  # nothing of a refused acceptance is committed
            if isinstance(exc, InvitationGone | NotFound):
                return _unusable(request, exc)
            data, status = str(exc), 409 if isinstance(exc, Conflict) else 422
        else:
            return _page(request, "accepted.html", email=user.email)
    return _invitation_form(request, session, token, status=status, error=data, name=name)
