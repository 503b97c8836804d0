"""The submission forms: one built from each of the admins' templates (its typed parameters as
inputs with their bounds) and one for a plain script with `#SBATCH` lines.

A form is first quoted (the API's quote: the request resolved, checked and priced as a
submission would be), then submitted through the API's submission path; every refusal is the
API's, shown beside the input it names (a directive's with its line number).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.authz import Principal, Scope
from consortium.errors import DomainError
from gateway.api.deps import (
    ContextDep,
    JobServiceDep,
    Reader,
    ReaderDep,
    SessionDep,
    SettingsDep,
)
from gateway.api.errors import status_for
from gateway.api.routes import jobs as api
from gateway.jobs import templates
from gateway.jobs.schemas import SLUG_PATTERN, JobOut, JobQuote, TemplateOut
from gateway.jobs.service import JobService
from gateway.settings import Settings
from gateway.ui import form_errors, jobs_data, submit_form
from gateway.ui.auth import SignedIn, Viewer
from gateway.ui.form_errors import PostedForm
from gateway.ui.jobs import DetachedViewer
from gateway.ui.pages import PageRoute, page

router = APIRouter(prefix="/ui/submit", include_in_schema=False, route_class=PageRoute)
Slug = Annotated[str, Path(pattern=SLUG_PATTERN)]
COMMON_INPUTS = ("project", "cluster", "name", "workdir", "when_unavailable")


@router.get("", response_class=HTMLResponse)
def choose(request: Request, viewer: SignedIn, session: SessionDep) -> Response:
    """The admins' templates to choose from, and the plain-script form."""
    found = [templates.to_out(t, v) for t, v in templates.list_templates(session)]
    return page(request, "submit_choose.html", templates=found)


def _partitions(settings: Settings) -> list[str]:
    names: dict[str, None] = {}
    for cluster in settings.clusters:
        names.update((p.name, None) for p in cluster.partitions)
    return list(names)


def _form_page(request: Request, settings: Settings, *, projects: Sequence[jobs_data.ProjectChoice],
               template: TemplateOut | None, form: Mapping[str, str] | None = None,
               errors: Mapping[str, list[form_errors.Message]] | None = None,
               quote: JobQuote | None = None, status: int = 200) -> Response:
    params = submit_form.parameter_fields(template.parameters, form) if template else []
    return page(request, "submit_form.html", status, job_template=template, parameters=params,
                submission_key=secrets.token_urlsafe(24),
                resources=submit_form.resource_fields(_partitions(settings), form),
                projects=[p for p in projects if p.active], form=form or {},
                clusters=[c.name for c in settings.clusters], errors=errors or {},
                quote=quote)


def _inputs(template: TemplateOut | None) -> list[str]:
    names = [*COMMON_INPUTS, *(f.name for f in submit_form.resource_fields(()))]
    if template is None:
        return [*names, "script"]
    return names + [submit_form.PARAM_PREFIX + p.name for p in template.parameters]


def _submit_projects(session: Session, principal: Principal) -> list[jobs_data.ProjectChoice]:
    return jobs_data.project_choices(session, principal, Scope.jobs_write)


@router.get("/script", response_class=HTMLResponse)
def script_form(request: Request, viewer: SignedIn, session: SessionDep,
                settings: SettingsDep) -> Response:
    return _form_page(request, settings, template=None,
                      projects=_submit_projects(session, viewer.principal))


@router.get("/templates/{slug}", response_class=HTMLResponse)
def template_form(request: Request, slug: Slug, viewer: SignedIn, session: SessionDep,
                  settings: SettingsDep) -> Response:
    template = templates.to_out(*templates.get_version(session, slug))
    return _form_page(request, settings, template=template,
                      projects=_submit_projects(session, viewer.principal))


async def _quote_or_submit(request: Request, slug: str | None, form: dict[str, str], *,
                           viewer: Viewer,
                           jobs: JobService, reader: Reader, settings: Settings,
                           context: RequestContext) -> Response:
    """`action=quote` shows the quote under the form; `action=submit` submits and opens the
    job's page. A refusal shows the form again with the API's words."""
    principal = viewer.principal

    def read(session: Session) -> tuple[TemplateOut | None, list[jobs_data.ProjectChoice]]:
        template = templates.to_out(*templates.get_version(session, slug)) if slug else None
        return template, _submit_projects(session, principal)
    template, projects = await reader(read)
    inputs = _inputs(template)

    def again(errors: Mapping[str, list[form_errors.Message]], status: int,
              quote: JobQuote | None = None) -> Response:
        return _form_page(request, settings, projects=projects, template=template, form=form,
                          errors=errors, quote=quote, status=status)
    try:
        body = submit_form.job_request(form, template=slug,
                                       specs=template.parameters if template else ())
    except ValidationError as exc:
        return again(form_errors.of_validation(exc, inputs), 422)
    try:
        if form.get("action") == "submit":
            # the API's submission with the key the quote's form carries: a form sent twice
            # (a double click, a reload) is one job
            answer = await api.submit_job(body=body, principal=principal, jobs=jobs,
                                          context=context,
                                          idempotency_key=form.get("submission_key") or None)
            job = JobOut.model_validate_json(bytes(answer.body))
            return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)
        return again({}, 200, await jobs.quote(principal, body))
    except DomainError as exc:
        return again(form_errors.of_refusal(exc, inputs), status_for(exc))


@router.post("/script", response_class=HTMLResponse)
async def post_script(*, request: Request, form: PostedForm, viewer: DetachedViewer,
                      jobs: JobServiceDep, reader: ReaderDep, settings: SettingsDep,
                      context: ContextDep) -> Response:
    return await _quote_or_submit(request, None, form, viewer=viewer, jobs=jobs, reader=reader,
                                  settings=settings, context=context)


@router.post("/templates/{slug}", response_class=HTMLResponse)
async def post_template(*, request: Request, slug: Slug, form: PostedForm,
                        viewer: DetachedViewer,
                        jobs: JobServiceDep, reader: ReaderDep, settings: SettingsDep,
                        context: ContextDep) -> Response:
    return await _quote_or_submit(request, slug, form, viewer=viewer, jobs=jobs, reader=reader,
                                  settings=settings, context=context)
