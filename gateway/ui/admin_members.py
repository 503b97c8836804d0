"""Admin pages of members and invitations: onboard a member with its cluster identities,
suspend and reactivate it, invite people to it and revoke invitations (the API's routes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.bounds import Id
from consortium.errors import DomainError
from consortium.models import MemberKind, MemberStatus, Role
from consortium.schemas import (
    InvitationCreate,
    InvitationCreated,
    MemberCreate,
    MemberOut,
    MemberUpdate,
)
from gateway.api.deps import (
    ContextDep,
    DatabaseDep,
    ReaderDep,
    SchedulersDep,
    SessionDep,
    SettingsDep,
)
from gateway.api.routes import invitations as invitations_api
from gateway.api.routes import members as members_api
from gateway.settings import Settings
from gateway.ui import form_errors
from gateway.ui.admin import AdminViewer, DetachedAdmin, form_text
from gateway.ui.auth import Viewer
from gateway.ui.form_errors import PostedForm
from gateway.ui.pages import PageRoute, page

router = APIRouter(prefix="/ui/admin", include_in_schema=False, route_class=PageRoute)
MemberSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
# the inputs of the member form, named after MemberCreate's fields (one identity row)
MEMBER_INPUTS = ("slug", "name", "kind", "contact_name", "contact_email", "templates_only",
                 "max_active_jobs")
IDENTITY_INPUTS = ("cluster", "unix_user", "slurm_account", "ssh_key_ref", "allowed_partitions")
IDENTITY = "identities.0."


def _members(session: Session, viewer: Viewer) -> list[MemberOut]:
    return members_api.list_members(session=session, principal=viewer.principal)


def _members_page(request: Request, session: Session, viewer: Viewer, settings: Settings,
                  *, form: Mapping[str, str] | None = None,
                  errors: Mapping[str, list[form_errors.Message]] | None = None, status: int = 200,
                  done: str | None = None) -> Response:
    return page(request, "admin_members.html", status, members=_members(session, viewer),
                kinds=list(MemberKind), clusters=settings.clusters, form=form or {},
                errors=errors or {}, done=done)


@router.get("/members", response_class=HTMLResponse)
def members(request: Request, viewer: AdminViewer, session: SessionDep, settings: SettingsDep,
            created: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """Every member with its status and identities, and the form to onboard one."""
    return _members_page(request, session, viewer, settings, done=created)


def member_body(form: Mapping[str, str]) -> MemberCreate:
    """The API's body for the form (one identity, given when its account is filled in)."""
    data: dict[str, Any] = {name: form_text(form, name) for name in MEMBER_INPUTS}
    data["templates_only"] = "templates_only" in form
    data = {k: v for k, v in data.items() if v is not None}
    identity: dict[str, Any] = {name: form_text(form, IDENTITY + name)
                                for name in IDENTITY_INPUTS}
    if identity["unix_user"] or identity["slurm_account"]:
        partitions = identity.pop("allowed_partitions")
        if partitions:  # comma-separated; empty: every partition
            identity["allowed_partitions"] = [p.strip() for p in partitions.split(",")
                                              if p.strip()]
        data["identities"] = [{k: v for k, v in identity.items() if v is not None}]
    return MemberCreate.model_validate(data)


@router.post("/members", response_class=HTMLResponse)
async def create_member(*, request: Request, form: PostedForm, viewer: DetachedAdmin,
                        database: DatabaseDep, reader: ReaderDep, settings: SettingsDep,
                        schedulers: SchedulersDep, context: ContextDep) -> Response:
    """Onboard a member (the API's POST /members: its Slurm accounts are created too)."""
    inputs = [*MEMBER_INPUTS, *(IDENTITY + name for name in IDENTITY_INPUTS)]
    try:
        body = member_body(form)
        created = await members_api.create_member(
            body=body, database=database, principal=viewer.principal, context=context,
            settings=settings, schedulers=schedulers)
    except (ValidationError, DomainError) as exc:
        status, errors = form_errors.refusal(exc, inputs)
    else:
        return RedirectResponse(f"/ui/admin/members?created={created.slug}", status_code=303)
    return await reader(lambda session: _members_page(
        request, session, viewer, settings, form=form, status=status, errors=errors))


@router.post("/members/{slug}/status")
async def change_status(*, slug: MemberSlug, viewer: DetachedAdmin, database: DatabaseDep,
                        settings: SettingsDep, schedulers: SchedulersDep, context: ContextDep,
                        status: Annotated[MemberStatus, Form()]) -> Response:
    """Suspend or reactivate (the API's PATCH /members/{member} with its status: Slurm's
    associations blocked or unblocked too)."""
    await members_api.update_member(member=slug, body=MemberUpdate(status=status),
                                    database=database, principal=viewer.principal,
                                    context=context, settings=settings, schedulers=schedulers)
    return RedirectResponse("/ui/admin/members", status_code=303)


# --- invitations ---------------------------------------------------------------------------


def _invitations_page(request: Request, session: Session, viewer: AdminViewer, slug: str | None,
                      *, status: int = 200,
                      created: InvitationCreated | None = None,
                      form: Mapping[str, str] | None = None,
                      errors: Mapping[str, list[form_errors.Message]] | None = None) -> Response:
    everyone = _members(session, viewer)
    chosen = slug or (everyone[0].slug if everyone else None)
    listed = []
    if chosen is not None:
        member = members_api.current_member(chosen, session, viewer.principal)
        listed = invitations_api.list_invitations(member=member, session=session,
                                                  principal=viewer.principal)
    return page(request, "admin_invitations.html", status, members=everyone, member=chosen,
                invitations=listed, roles=list(Role), created=created, form=form or {},
                errors=errors or {})


@router.get("/invitations", response_class=HTMLResponse)
def invitations(request: Request, viewer: AdminViewer, session: SessionDep,
                member: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """A member's invitations with their status, and the form to invite someone."""
    return _invitations_page(request, session, viewer, member)


def _invite(session: Session, viewer: AdminViewer, slug: str, form: Mapping[str, str], *,
            settings: Settings, context: RequestContext) -> InvitationCreated:
    member = members_api.current_member(slug, session, viewer.principal)
    body = InvitationCreate.model_validate({"email": form.get("email", ""),
                                            "role": form.get("role", "")})
    return invitations_api.create_invitation(body=body, member=member, session=session,
                                             principal=viewer.principal, context=context,
                                             settings=settings)


@router.post("/invitations/{slug}", response_class=HTMLResponse)
def create_invitation(*, request: Request, slug: MemberSlug, form: PostedForm,
                      viewer: AdminViewer, session: SessionDep, settings: SettingsDep,
                      context: ContextDep) -> Response:
    """Invite someone; the page shows the link when no mail took it (the API's answer)."""
    inputs = ("email", "role")
    try:
        created = _invite(session, viewer, slug, form, settings=settings, context=context)
    except (ValidationError, DomainError) as exc:
        session.rollback()  # a refusal may come after a write (validation never does)
        status, errors = form_errors.refusal(exc, inputs)
        return _invitations_page(request, session, viewer, slug, status=status, form=form,
                                 errors=errors)
    return _invitations_page(request, session, viewer, slug, created=created)


@router.post("/invitations/{slug}/{invitation_id}/revoke")
def revoke_invitation(slug: MemberSlug, invitation_id: Annotated[Id, Path()],
                      viewer: AdminViewer, session: SessionDep, context: ContextDep) -> Response:
    member = members_api.current_member(slug, session, viewer.principal)
    invitations_api.revoke_invitation(invitation_id=invitation_id, member=member,
                                      session=session, principal=viewer.principal,
                                      context=context)
    return RedirectResponse(f"/ui/admin/invitations?member={slug}", status_code=303)
