"""Job templates: read by every signed-in user, written by consortium admins (versioned)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from consortium.bounds import Id
from gateway.api.deps import Caller, ContextDep, SessionDep
from gateway.api.errors import problems
from gateway.jobs import templates
from gateway.jobs.schemas import SLUG_PATTERN, TemplateCreate, TemplateOut, TemplateUpdate

router = APIRouter(tags=["templates"])
Slug = Annotated[str, Path(pattern=SLUG_PATTERN)]


@router.get("/templates", operation_id="templates-list", response_model=list[TemplateOut],
            responses=problems(401, 422))
def list_templates(
    session: SessionDep,
    principal: Caller,
    include_disabled: Annotated[bool, Query(description="admins only")] = False,
) -> list[TemplateOut]:
    """The latest version of each template."""
    show_disabled = include_disabled and principal.acts_as_admin
    return [templates.to_out(t, v)
            for t, v in templates.list_templates(session, include_disabled=show_disabled)]


@router.get("/templates/{slug}", operation_id="templates-get", response_model=TemplateOut,
            responses=problems(401, 404, 422))
def get_template(
    slug: Slug,
    session: SessionDep,
    _principal: Caller,  # any signed-in user
    version: Annotated[Id | None, Query(description="default: the latest")] = None,
) -> TemplateOut:
    return templates.to_out(*templates.get_version(session, slug, version))


@router.post("/templates", operation_id="templates-create", status_code=201,
             response_model=TemplateOut,
             responses=problems(401, 403, 409, 422))
def create_template(body: TemplateCreate, session: SessionDep, principal: Caller,
                    context: ContextDep) -> TemplateOut:
    """A new template, version 1 (admins). Its body must render with its parameters."""
    return templates.to_out(*templates.create_template(session, principal, body, context))


@router.put("/templates/{slug}", operation_id="templates-update", response_model=TemplateOut,
            responses=problems(401, 403, 404, 422))
def update_template(slug: Slug, body: TemplateUpdate, session: SessionDep,
                    principal: Caller, context: ContextDep) -> TemplateOut:
    """A new version of the template (admins); jobs keep the version they used."""
    return templates.to_out(*templates.update_template(session, principal, slug, body, context))
