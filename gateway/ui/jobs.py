"""The job pages: the list with its filters, a job's page (state timeline, quote beside charge,
pending reason, live log, cancel) and its files.

Reads go through gateway.ui.jobs_data (the API's functions); the live log, the state stream,
the file listing and downloads are the API's own routes called with the page's principal, so a
page never sees more, or differently, than the API would show the same person.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import AfterValidator

from consortium.bounds import MAX_ID, Offset
from consortium.errors import DomainError
from gateway.api.deps import ContextDep, DatabaseDep, JobServiceDep, ReaderDep, SessionDep
from gateway.api.routes import jobs as api
from gateway.jobs.models import JobState
from gateway.jobs.schemas import OutputStream, relative_path
from gateway.jobs.submission import PUBLIC_ID_PATTERN
from gateway.ui import form_errors, i18n, jobs_data
from gateway.ui.auth import SignedIn, Viewer, get_viewer
from gateway.ui.date_inputs import DateText, day_start
from gateway.ui.pages import PageRoute, SignInRequired, job_detail, page

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)
JobId = Annotated[str, Path(pattern=PUBLIC_ID_PATTERN)]
IdText = Annotated[str, Query(max_length=18, pattern=r"^[0-9]*$")]


async def detached_viewer(request: Request, database: DatabaseDep) -> Viewer:
    """The signed-in person for routes that wait on a cluster: read in a short transaction of
    its own, so that no session (on SQLite: no write lock) is held while the route waits."""
    def read() -> Viewer | None:
        with database.transaction(write=False) as session:
            return get_viewer(request, session)
    viewer = await anyio.to_thread.run_sync(read)
    if viewer is None:
        raise SignInRequired
    return viewer


DetachedViewer = Annotated[Viewer, Depends(detached_viewer)]


@router.get("/jobs", response_class=HTMLResponse)
def jobs_list(
    *,
    request: Request,
    viewer: SignedIn,
    session: SessionDep,
    state: Annotated[list[JobState] | None, Query()] = None,
    project: IdText = "",
    mine: bool = False,
    since: DateText = "",
    until: DateText = "",
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    """The jobs the viewer may read, newest first, a page at a time."""
    query = jobs_data.JobQuery(states=tuple(state or ()), project_id=int(project) if project
                               else None, mine=mine, since=day_start(since, "since"),
                               until=day_start(until, "until", days_after=1), before_id=cursor)
    listing = jobs_data.list_jobs(session, viewer.principal, query)
    next_url = None
    if listing.next_cursor is not None:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        next_url = f"/ui/jobs?{urlencode([*params, ('cursor', listing.next_cursor)])}"
    return page(request, "jobs_list.html", jobs=listing.items, query=query,
                projects=jobs_data.project_choices(session, viewer.principal),
                states=list(JobState), next_url=next_url, first_page=cursor is None)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: JobId, viewer: SignedIn, session: SessionDep,
             task: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None) -> Response:
    """A job: its state timeline, quote and charge, pending reason, live log and cancel."""
    job = jobs_data.job_page(session, viewer.principal, job_id)
    tasks = [t.task_id for t in job.array_tasks]
    log_task = task if task is not None else (tasks[0] if tasks else None)
    return page(request, "jobs_detail.html", job=job, log_task=log_task, states=list(JobState),
                cancellable=jobs_data.can_cancel(viewer.principal, job))


@router.get("/jobs/{job_id}/output")
async def job_output_stream(*, request: Request, job_id: JobId, viewer: DetachedViewer,
                            jobs: JobServiceDep, stream: OutputStream = OutputStream.stdout,
                            offset: Annotated[Offset, Query()] = 0,
                            task: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None
                            ) -> Response:
    """The live log: the API's server-sent events of the job's output (from `offset`, where
    the page's script resumes after a dropped connection)."""
    return await api.read_output(job_id=job_id, request=request, principal=viewer.principal,
                                 jobs=jobs, stream=stream, offset=offset, limit=None,
                                 follow=True, task=task)


@router.get("/jobs/{job_id}/events")
async def job_state_stream(job_id: JobId, viewer: DetachedViewer,
                           jobs: JobServiceDep) -> Response:
    """The timeline as it grows: the API's server-sent events of the job's states, their
    details in the viewer's language."""
    i18n.current_locale.set(viewer.locale)  # kept by the stream's task, made after this
    return api.state_stream(job_id, await jobs.job_events(viewer.principal, job_id, 0),
                            said=job_detail)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: JobId, viewer: DetachedViewer, jobs: JobServiceDep,
                     context: ContextDep) -> Response:
    """The API's cancel (idempotent); back to the job's page, which shows what came of it."""
    await jobs.cancel(viewer.principal, job_id, context)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


DirPath = Annotated[str, Query(max_length=500), AfterValidator(relative_path)]


@router.get("/jobs/{job_id}/files", response_class=HTMLResponse)
async def job_files(*, request: Request, job_id: JobId, viewer: DetachedViewer,
                    jobs: JobServiceDep, reader: ReaderDep, path: DirPath = "") -> Response:
    """A directory of the job's working directory (the API's listing); files download. A job
    the viewer may not read is a 404 page; a directory that cannot be listed (not written yet,
    the cluster unreachable) says why on the page."""
    job = await reader(lambda session: jobs_data.job_page(session, viewer.principal, job_id))
    error = None
    try:
        entries = (await jobs.list_job_files(viewer.principal, job_id, path)).entries
    except DomainError as exc:
        entries, error = [], form_errors.refusal_text(exc)
    parent = path.rpartition("/")[0] if path else None
    return page(request, "jobs_files.html", job=job, path=path, entries=entries,
                parent=parent, error=error)


@router.get("/jobs/{job_id}/files/{path:path}")
async def job_file(job_id: JobId, path: api.FileInJob, viewer: DetachedViewer,
                   jobs: JobServiceDep) -> Response:
    """A file of the job's working directory, as the API sends it (an attachment)."""
    return await api.download_job_file(job_id, path, viewer.principal, jobs)
