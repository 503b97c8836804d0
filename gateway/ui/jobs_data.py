"""What the job pages show, read with the API's own functions (gateway.jobs.repository and
gateway.jobs.views): the same rows, rights and shapes as GET /api/v1/jobs and /jobs/{id}."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from consortium import service as consortium
from consortium.authz import Principal, Scope, member_ids_for
from consortium.models import ProjectStatus
from gateway.jobs import repository
from gateway.jobs.models import JobState
from gateway.jobs.schemas import JobDetail, JobOut
from gateway.jobs.views import job_detail, job_out

PAGE_SIZE = 25


@dataclass(frozen=True)
class ProjectChoice:
    id: int
    path: str  # member-slug/project-slug, as the API takes it
    name: str
    member_id: int
    active: bool


def project_choices(session: Session, principal: Principal,
                    scope: Scope = Scope.jobs_read) -> list[ProjectChoice]:
    """The projects of the members whose jobs the principal may act on with `scope`."""
    allowed = member_ids_for(principal, scope)
    choices: list[ProjectChoice] = []
    for member in consortium.list_members(session, principal):
        if allowed is not None and member.id not in allowed:
            continue
        choices.extend(
            ProjectChoice(id=p.id, path=f"{member.slug}/{p.slug}", name=f"{member.name} · {p.name}",
                          member_id=member.id, active=p.status is ProjectStatus.active)
            for p in consortium.list_projects(session, principal, member))
    return choices


@dataclass(frozen=True)
class JobQuery:
    """The list's filters, as the page's query string gives them."""

    states: tuple[JobState, ...] = ()
    project_id: int | None = None
    mine: bool = False
    since: datetime | None = None
    until: datetime | None = None  # before
    before_id: int | None = None


@dataclass(frozen=True)
class JobListPage:
    items: list[JobOut]
    next_cursor: int | None


def list_jobs(session: Session, principal: Principal, query: JobQuery,
              limit: int = PAGE_SIZE) -> JobListPage:
    """A page of the jobs the principal may read, newest first (as GET /api/v1/jobs)."""
    filters = repository.JobFilters(
        project_id=query.project_id, user_id=principal.user_id if query.mine else None,
        states=query.states, since=query.since, until=query.until)
    found = repository.list_jobs(session, principal, filters, before_id=query.before_id,
                                 limit=limit + 1)
    items = found[:limit]
    counts = repository.task_counts(session, items)
    return JobListPage(items=[job_out(j, counts.get(j.id, {})) for j in items],
                       next_cursor=items[-1].id if len(found) > limit else None)


def job_page(session: Session, principal: Principal, public_id: str) -> JobDetail:
    """The job with its events and tasks (as GET /api/v1/jobs/{id}); NotFound as the API's."""
    job = repository.visible_job(session, principal, public_id, Scope.jobs_read)
    return job_detail(job, repository.events_of(session, job.id),
                      repository.tasks_of(session, job))


def can_cancel(principal: Principal, job: JobDetail) -> bool:
    """The cancel button is shown when the API would take the cancel (jobs:write on the
    member, the job not ended)."""
    allowed = member_ids_for(principal, Scope.jobs_write)
    may = allowed is None or job.member_id in allowed
    return may and not job.state.terminal and not job.cancel_requested
