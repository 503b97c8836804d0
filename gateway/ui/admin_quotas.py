"""Admin pages of the books: a member's allocations (grant, adjust) and the ledger with its
verification (every balance recomputed from the entries, as `hpcgw admin ledger verify`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from consortium.bounds import Id
from consortium.errors import DomainError
from consortium.models import Member
from consortium.schemas import MemberOut
from gateway.api.deps import ContextDep, DatabaseDep, SessionDep
from gateway.api.errors import status_for
from gateway.api.routes import members as members_api
from gateway.api.routes import quotas as quotas_api
from gateway.api.schemas import Page
from gateway.ui import form_errors
from gateway.ui.admin import AdminViewer, form_text, next_page_url
from gateway.ui.form_errors import PostedForm
from gateway.ui.pages import PageRoute, page
from quotas import ledger
from quotas.schemas import AdjustmentIn, AllocationIn, LedgerEntryOut

router = APIRouter(prefix="/ui/admin", include_in_schema=False, route_class=PageRoute)
MemberSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
MemberQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9-]*$")]
GRANT_INPUTS = ("amount_su", "overdraft_su", "starts_at", "ends_at", "project", "note")
LEDGER_PAGE = 50


def _chosen(session: Session, viewer: AdminViewer, slug: str | None
            ) -> tuple[list[MemberOut], Member | None]:
    """Every member, and the one the page shows (the first by default)."""
    everyone = members_api.list_members(session=session, principal=viewer.principal)
    chosen = slug or (everyone[0].slug if everyone else None)
    member = members_api.current_member(chosen, session, viewer.principal) if chosen else None
    return everyone, member


def _allocations_page(request: Request, session: Session, viewer: AdminViewer,
                      slug: str | None, *, status: int = 200,
                      form: Mapping[str, str] | None = None,
                      errors: Mapping[str, list[form_errors.Message]] | None = None) -> Response:
    everyone, member = _chosen(session, viewer, slug)
    allocations = (quotas_api.list_allocations(member=member, session=session,
                                               principal=viewer.principal, state=None)
                   if member is not None else [])
    return page(request, "admin_allocations.html", status, members=everyone,
                member=member.slug if member else None, allocations=allocations,
                form=form or {}, errors=errors or {})


@router.get("/allocations", response_class=HTMLResponse)
def allocations(request: Request, viewer: AdminViewer, session: SessionDep,
                member: MemberQuery = None) -> Response:
    """A member's allocations with their balances; forms to grant and to adjust."""
    return _allocations_page(request, session, viewer, member)


def _day_instant(form: Mapping[str, str], name: str) -> str | None:
    """A date input as the API's instant (midnight UTC)."""
    day = form_text(form, name)
    return f"{day}T00:00:00Z" if day else None


@router.post("/allocations/{slug}", response_class=HTMLResponse)
def grant(*, pushes: quotas_api.LimitPushes, request: Request, slug: MemberSlug,
          form: PostedForm, viewer: AdminViewer, session: SessionDep,
          context: ContextDep) -> Response:
    """Grant hours (the API's POST /members/{member}/allocations, Slurm limit pushed after)."""
    member = members_api.current_member(slug, session, viewer.principal)
    data = {name: form_text(form, name) for name in ("amount_su", "overdraft_su", "project",
                                                      "note")}
    data.update(starts_at=_day_instant(form, "starts_at"), ends_at=_day_instant(form, "ends_at"))
    try:
        body = AllocationIn.model_validate({k: v for k, v in data.items() if v is not None})
        quotas_api.grant_allocation(pushes=pushes, body=body, member=member, session=session,
                                    principal=viewer.principal, context=context)
    except (ValidationError, DomainError) as exc:
        session.rollback()  # a refusal may come after a write (validation never does)
        status, errors = form_errors.refusal(exc, GRANT_INPUTS)
        return _allocations_page(request, session, viewer, slug, status=status, form=form,
                                 errors=errors)
    return RedirectResponse(f"/ui/admin/allocations?member={slug}", status_code=303)


@router.post("/allocations/{slug}/{allocation_id}/adjust", response_class=HTMLResponse)
def adjust(*, pushes: quotas_api.LimitPushes, request: Request, slug: MemberSlug,
           allocation_id: Annotated[Id, Path()], form: PostedForm, viewer: AdminViewer,
           session: SessionDep, context: ContextDep) -> Response:
    """Add hours to an allocation or take some back, with a reason (the API's adjustment)."""
    member = members_api.current_member(slug, session, viewer.principal)
    inputs = (f"adjust.{allocation_id}",)
    try:
        body = AdjustmentIn.model_validate({"amount_su": form_text(form, "amount_su"),
                                            "reason": form.get("reason", "")})
        quotas_api.adjust_allocation(pushes=pushes, allocation_id=allocation_id, body=body,
                                     member=member, session=session,
                                     principal=viewer.principal, context=context)
    except ValidationError as exc:
        messages = [m for ms in form_errors.of_validation(exc, ()).values() for m in ms]
        return _allocations_page(request, session, viewer, slug, status=422,
                                 errors={inputs[0]: messages})
    except DomainError as exc:
        session.rollback()
        return _allocations_page(request, session, viewer, slug, status=status_for(exc),
                                 errors={inputs[0]: [form_errors.refusal_text(exc)]})
    return RedirectResponse(f"/ui/admin/allocations?member={slug}", status_code=303)


@router.get("/ledger", response_class=HTMLResponse)
def ledger_page(
    *,
    request: Request,
    viewer: AdminViewer,
    session: SessionDep,
    database: DatabaseDep,
    member: MemberQuery = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Response:
    """The books' verification (every allocation), and a member's entries, newest first."""
    drifts = ledger.verify(session)
    everyone, chosen = _chosen(session, viewer, member)
    entries: Page[LedgerEntryOut] = Page(items=[])
    if chosen is not None:
        found = quotas_api.member_ledger(
            request=request, member=chosen, session=session, database=database,
            principal=viewer.principal, kind=None, allocation=None, job=None, since=None,
            until=None, cursor=cursor, limit=LEDGER_PAGE, format="json")
        if isinstance(found, Page):  # always, with format=json
            entries = found
    return page(request, "admin_ledger.html", drifts=drifts, members=everyone,
                member=chosen.slug if chosen else None, entries=entries.items,
                next_url=next_page_url(request, entries.next_cursor))
