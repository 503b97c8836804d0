"""Queries of the job domain. Every read of jobs on behalf of a caller goes through
`visible_job`, `list_jobs` or `list_heads`, which scope it with consortium.authz."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, func, select
from sqlalchemy.orm import Session, defer

from consortium.authz import Principal, Scope, member_ids_for, require
from consortium.errors import NotFound
from gateway.jobs.models import ACTIVE_STATES, Job, JobEvent, JobState, JobTask

# The statements of the hottest reads, built once: building one costs more than running it
# (SQLAlchemy caches the compiled SQL, not the construction of the statement object).
_JOB_BY_PUBLIC_ID = select(Job).where(Job.public_id == bindparam("public_id"))
_JOB_IN_MEMBERS = _JOB_BY_PUBLIC_ID.where(
    Job.member_id.in_(bindparam("member_ids", expanding=True)))
_EVENTS_AFTER = (select(JobEvent)
                 .where(JobEvent.job_id == bindparam("job_id"), JobEvent.id > bindparam("after_id"))
                 .order_by(JobEvent.id))


def visible_job(session: Session, principal: Principal, public_id: str, scope: Scope, *,
                for_update: bool = False) -> Job:
    """The job, if the principal may act on it with `scope`. A job of a member the principal
    cannot see is not even read: it is missing from the same query, the same 404."""
    params: dict[str, object]
    if principal.acts_as_admin:
        stmt, params = _JOB_BY_PUBLIC_ID, {"public_id": public_id}
    else:
        stmt, params = _JOB_IN_MEMBERS, {"public_id": public_id,
                                         "member_ids": sorted(principal.visible_member_ids())}
    job = session.scalars(stmt.with_for_update() if for_update else stmt, params).first()
    if job is None:
        raise NotFound(f"no job {public_id}")
    require(principal, scope, job.member_id)  # a member it sees: 403 if its role falls short
    return job


@dataclass(frozen=True)
class JobFilters:
    project_id: int | None = None
    user_id: int | None = None
    states: Sequence[JobState] = ()
    cluster: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # created before
    member_id: int | None = None


# A list's conditions, each on a bound parameter named for its filter. A list's statement is
# built once per set of filters in use (_listing): built per request, it cost as much as the
# page's reads (the floor of GET /jobs, issue 10, needs that saved).
_CONDITIONS: dict[str, ColumnElement[bool]] = {
    "member_ids": Job.member_id.in_(bindparam("member_ids", expanding=True)),
    "member_id": Job.member_id == bindparam("member_id"),
    "project_id": Job.project_id == bindparam("project_id"),
    "user_id": Job.user_id == bindparam("user_id"),
    "states": Job.state.in_(bindparam("states", expanding=True)),
    "cluster": Job.cluster == bindparam("cluster"),
    "since": Job.created_at >= bindparam("since"),
    "until": Job.created_at < bindparam("until"),
    "before_id": Job.id < bindparam("before_id"),
}


def list_jobs(session: Session, principal: Principal, filters: JobFilters, *,
              before_id: int | None, limit: int) -> list[Job]:
    """Newest first (id descending), `limit` of them, only ids below `before_id` (the cursor):
    rows added meanwhile never shift a page."""
    params = _listed(principal, filters, before_id)
    if params is None:
        return []
    return list(session.scalars(_listing(tuple(params), heads=False),
                                {**params, "limit": limit}))


def list_heads(session: Session, principal: Principal, filters: JobFilters, *,
               before_id: int | None, limit: int) -> Sequence[Row[int, str, int]]:
    """list_jobs' page as its jobs' (id, public_id, revision): what kept items are checked
    against (gateway.jobs.reads)."""
    params = _listed(principal, filters, before_id)
    if params is None:
        return []
    return session.execute(_listing(tuple(params), heads=True), {**params, "limit": limit}).all()


def _listed(principal: Principal, filters: JobFilters,
            before_id: int | None) -> dict[str, object] | None:
    """The parameters of a caller's list, by condition (consortium.authz scopes it); None if
    it may see no job."""
    allowed = member_ids_for(principal, Scope.jobs_read)
    if allowed is not None and not allowed:
        return None
    params: dict[str, object] = {
        "member_ids": sorted(allowed) if allowed is not None else None,
        "member_id": filters.member_id, "project_id": filters.project_id,
        "user_id": filters.user_id, "states": list(filters.states) or None,
        "cluster": filters.cluster, "since": filters.since, "until": filters.until,
        "before_id": before_id,
    }
    return {name: value for name, value in params.items() if value is not None}


@cache
def _listing(names: tuple[str, ...], *, heads: bool) -> Select[Any]:
    """The list's statement on the conditions of these names, `limit` bound: its jobs, or
    their (id, public_id, revision)."""
    columns = (Job.id, Job.public_id, Job.revision) if heads else (Job,)
    return (select(*columns).where(*(_CONDITIONS[name] for name in names))
            .order_by(Job.id.desc()).limit(bindparam("limit")))


_LISTED = (select(Job).where(Job.id.in_(bindparam("ids", expanding=True)))
           .options(defer(Job.script, raiseload=True)))


def listed_jobs(session: Session, ids: Sequence[int]) -> list[Job]:
    """Jobs by id, as a list shows them: without their script (never read)."""
    return list(session.scalars(_LISTED, {"ids": ids}))


def events_of(session: Session, job_id: int, *, after_id: int = 0) -> list[JobEvent]:
    return list(session.scalars(_EVENTS_AFTER, {"job_id": job_id, "after_id": after_id}))


_TASKS = (select(JobTask).where(JobTask.job_id == bindparam("job_id"))
          .order_by(JobTask.task_id))


def tasks_of(session: Session, job: Job) -> list[JobTask]:
    """An array's task rows by task id; none (and no query) for a single job."""
    if job.array is None:
        return []
    return list(session.scalars(_TASKS, {"job_id": job.id}))


def task_counts(session: Session, jobs: Sequence[Job]) -> dict[int, dict[str, int]]:
    """The arrays' tasks counted by state, by job id, in one query (none without arrays)."""
    arrays = [job.id for job in jobs if job.array is not None]
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    if arrays:
        for job_id, state, count in session.execute(
                select(JobTask.job_id, JobTask.state, func.count())
                .where(JobTask.job_id.in_(arrays))
                .group_by(JobTask.job_id, JobTask.state).order_by(JobTask.state)):
            counts[job_id][state.value] = count
    return counts


def tracked_jobs(session: Session, cluster: str) -> list[Job]:
    """The cluster's jobs that have not ended, oldest first."""
    return list(session.scalars(
        select(Job).where(Job.cluster == cluster, Job.state.in_(list(ACTIVE_STATES)))
        .options(defer(Job.script, raiseload=True)).order_by(Job.id)))


def job_by_public_id(session: Session, public_id: str) -> Job:
    """The job, not scoped: for a caller whose rights were checked before (a stream)."""
    return session.scalars(_JOB_BY_PUBLIC_ID, {"public_id": public_id}).one()


_REVISION = select(Job.revision).where(Job.id == bindparam("job_id"))
_REVISION_LOCKED = _REVISION.with_for_update(of=Job)


def revision_of(session: Session, job_id: int, *, lock: bool = False) -> int:
    """The job's revision (kept by triggers, migration 0005); `lock`: its row locked too."""
    return session.scalars(_REVISION_LOCKED if lock else _REVISION, {"job_id": job_id}).one()


def output_ended(session: Session, job: Job, task: int | None) -> bool:
    """Whether the output being read is final: the job, or the array's task, has ended."""
    if job.state.terminal or task is None:
        return job.state.terminal
    state = session.scalars(select(JobTask.state).where(JobTask.job_id == job.id,
                                                        JobTask.task_id == task)).first()
    return state is not None and state.terminal
