"""The home: `/` sends a signed-in person to their member's dashboard (a choice when they are
in several, the consortium overview for an admin) and shows a visitor what the gateway is."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from consortium.authz import Scope, member_ids_for
from consortium.errors import NotFound
from consortium.models import Member
from gateway.api.deps import SessionDep
from gateway.ui.auth import MaybeSignedIn, SignedIn
from gateway.ui.pages import PageRoute, page
from quotas import usage
from quotas.schemas import UsageOut

router = APIRouter(include_in_schema=False, route_class=PageRoute)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, viewer: MaybeSignedIn, session: SessionDep) -> Response:
    if viewer is None:
        return page(request, "home.html")
    if viewer.principal.acts_as_admin:
        return RedirectResponse("/ui/overview", status_code=303)
    readable = member_ids_for(viewer.principal, Scope.usage_read) or frozenset()
    members = session.scalars(select(Member).where(Member.id.in_(sorted(readable)))
                              .order_by(Member.name)).all()
    if len(members) == 1:
        return RedirectResponse(f"/ui/members/{members[0].slug}", status_code=303)
    return page(request, "choose_member.html", members=members)


@router.get("/ui")
@router.get("/ui/")
@router.get("/dashboard")
def to_home() -> RedirectResponse:
    return RedirectResponse("/", status_code=308)


@router.get("/ui/overview", response_class=HTMLResponse)
def overview(request: Request, viewer: SignedIn, session: SessionDep) -> Response:
    """The consortium at a glance (admins): each member's figures, as its usage API gives
    them, with a link to its dashboard. Anyone else gets the API's answer: 404."""
    if not viewer.principal.acts_as_admin:
        raise NotFound("no such page")
    members = session.scalars(select(Member).order_by(Member.name)).all()
    rows = [(m, UsageOut.of(usage.report(session, m.id))) for m in members]
    return page(request, "overview.html", rows=rows)
