"""Jobs: submit (with Idempotency-Key), list, read, cancel, output, events, files.

Reads of jobs come from the database only, in one short transaction in one worker thread
(ReaderDep); a job's detail, the read clients poll, through gateway.jobs.reads. Routes that
wait on a cluster are `async` and touch the database in worker threads (JobService), never
holding a connection across the wait.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator
from sqlalchemy.orm import Session

from consortium.bounds import MAX_ID, Id, Instant, Offset
from gateway.api import examples
from gateway.api.deps import (
    CALLER_SECURITY,
    Caller,
    ContextDep,
    JobServiceDep,
    ReaderDep,
    credential_of,
)
from gateway.api.errors import problems
from gateway.api.etags import matches_any, revision_etag
from gateway.api.examples import json_example
from gateway.api.schemas import Page
from gateway.auth.authenticator import Authenticator
from gateway.jobs import idempotency, repository
from gateway.jobs.arrays import MAX_TASK_ID
from gateway.jobs.models import JobEvent, JobState
from gateway.jobs.reads import JobReads
from gateway.jobs.schemas import (
    FileListing,
    JobCreate,
    JobDetail,
    JobOut,
    JobQuote,
    OutputOut,
    OutputStream,
    file_path,
    relative_path,
)
from gateway.jobs.submission import PUBLIC_ID_PATTERN

router = APIRouter(tags=["jobs"])

EVENT_STREAM = "text/event-stream"
KEEPALIVE_SECONDS = 15.0
JOBS_PATH = "/api/v1/jobs"
JobId = Annotated[str, Path(pattern=PUBLIC_ID_PATTERN, description="the job's id")]
FileInJob = Annotated[str, Path(max_length=500), AfterValidator(file_path)]
_JOB = {"model": JobDetail}
_ETAG = {"ETag": {"description": "the job's revision (a strong validator)",
                  "schema": {"type": "string"}}}
_IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False,
                  "description": "the ETag of a copy held: 304 (no body) while the job is "
                                 "unchanged", "schema": {"type": "string"}}


def _sse_doc(*events: str) -> dict[str, Any]:
    """A stream of server-sent events, documented as OpenAPI 3.1 does: its `schema` describes
    each event (so a schema-driven client can check every one), `data` holding JSON."""
    return {"content": {EVENT_STREAM: {"schema": {
        "type": "object", "required": ["event", "data"],
        "properties": {"event": {"enum": list(events)}, "id": {"type": "string"},
                       "data": {"type": "string", "contentMediaType": "application/json"}}}}}}


class _PollRoute(APIRoute):
    """The route of the read clients poll: FastAPI solves none of its parameters. Its endpoint
    is called with the path's job id and the request, from which it reads the credential and
    If-None-Match (openapi_extra documents them). FastAPI's solving, even of the path's id
    alone (a Response made and the id validated by pydantic for every poll), was a seventh of a
    poll's CPU (py-spy on the workers under wrk's If-None-Match load); taking it out gave a
    fifth more polls a second (runs before and after interleaved, SQLite and PostgreSQL): the
    floor of issue 10 (5,000 polls a second with If-None-Match on two workers) needs it. An id
    of another form goes to FastAPI's handler, for its 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        solved = super().get_route_handler()

        async def handler(request: Request) -> Response:
            job_id = request.path_params["job_id"]
            if _PUBLIC_ID.fullmatch(job_id) is None:
                return await solved(request)
            return await get_job(job_id, request)
        return handler


_PUBLIC_ID = re.compile(PUBLIC_ID_PATTERN)


async def get_job(job_id: JobId, request: Request) -> Response:
    """A job with its request, quote, charge, timings, events and pending reason. The ETag
    changes with every change of the job: poll with If-None-Match."""
    credential = credential_of(request)
    reads: JobReads = request.app.state.job_reads
    authenticator: Authenticator = request.app.state.authenticator
    head = await reads.head(job_id)
    principal = authenticator.kept(credential, head.auth_epoch) if head else None
    if principal is None:
        principal = await authenticator.caller(credential)
    answer = await reads.detail(principal, job_id, head)
    headers = {"ETag": revision_etag(answer.revision)}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and matches_any(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type="application/json", headers=headers)


# The first route, so the first matched (FastAPI tries the routes in order, twice per request).
# Its JSON is kept as bytes (gateway.jobs.reads), its caller's principal kept
# (gateway.auth.authenticator), both checked by one read on the event loop.
router.add_api_route(
    "/jobs/{job_id}", get_job, methods=["GET"], route_class_override=_PollRoute,
    response_class=JSONResponse, operation_id="jobs-get",
    responses={200: {"model": JobDetail, **json_example(examples.JOB_DETAIL), "headers": _ETAG},
               304: {"description": "the job is unchanged since the tag sent in If-None-Match",
                     "headers": _ETAG},
               **problems(401, 403, 404, 422)},
    openapi_extra={**CALLER_SECURITY, "parameters": [_IF_NONE_MATCH]})


@router.post(
    "/jobs", status_code=201, response_model=JobDetail, operation_id="jobs-submit",
    responses={201: json_example(examples.JOB_DETAIL),
               202: {**_JOB, "description": "sent, no answer: the job is `unknown` until the "
                                            "tracker finds it by its marker; or not sent: the "
                                            "job is `waiting` for its cluster (hold taken)"},
               **problems(401, 403, 404, 409, 422, 503)},
)
async def submit_job(
    *,
    body: Annotated[JobCreate, Body(openapi_examples=examples.JOB_CREATE)],
    principal: Caller,
    jobs: JobServiceDep,
    context: ContextDep,
    idempotency_key: Annotated[str | None, Header(
        pattern=idempotency.KEY_PATTERN,
        description="retries with the same key and body get the first response again; a "
                    "refusal (nothing executed) is not kept, its retry runs anew")] = None,
) -> Response:
    """Submit a script, or a template with its parameters. 201 with the job once the cluster
    has it; 202 if the cluster's answer was lost (the job is `unknown`, never submitted twice),
    or if the job waits for a cluster that cannot be reached or is in a maintenance window
    (`when_unavailable: queue`: the job is `waiting`, its hold taken, sent once it answers).
    Refusals: 403 (policy, `quota-exceeded` with the numbers), 409, 422 (with field paths),
    503 with Retry-After when the cluster cannot be reached (nothing submitted, hold released)."""
    if idempotency_key is None:
        submission = await jobs.submit(principal, body, context)
        return Response(submission.job.model_dump_json(), status_code=submission.status,
                        media_type="application/json")
    fingerprint = idempotency.fingerprint("POST", JOBS_PATH, body.model_dump(mode="json"))
    claimed = await jobs.claim_key(principal.user_id, idempotency_key, fingerprint)
    if isinstance(claimed, idempotency.Replay):
        return JSONResponse(claimed.body, status_code=claimed.status)
    try:
        submission = await jobs.submit(principal, body, context,
                                       idempotency_record=claimed.record_id)
    except BaseException:
        # a refusal executed nothing (a job in doubt answers 202, never raises): the key is
        # freed so that a retry is processed anew; a key whose job may have gone stays
        with anyio.CancelScope(shield=True):
            await jobs.release_key(claimed.record_id)
        raise
    # the service stored this answer under the key, with the outcome it shows
    return JSONResponse(submission.job.model_dump(mode="json"), status_code=submission.status)


@router.post("/jobs/quote", response_model=JobQuote, operation_id="jobs-quote",
             responses={200: json_example(examples.JOB_QUOTE),
                        **problems(401, 403, 404, 409, 422)})
async def quote_job(body: Annotated[JobCreate, Body(openapi_examples=examples.JOB_CREATE)],
                    principal: Caller,
                    jobs: JobServiceDep) -> JobQuote:
    """What submitting this body now would be quoted and held, and whether it would be
    accepted (`fits`; `message` says why not: quota, job cap). The script's `#SBATCH` lines
    and the template are resolved, and the request checked, as a submission is: its refusals
    (422, 403, 404, 409) are a submission's. Nothing is written or sent to the cluster."""
    return await jobs.quote(principal, body)


@router.get("/jobs", response_model=Page[JobOut], operation_id="jobs-list",
            responses=problems(401, 422))
async def list_jobs(
    *,
    principal: Caller,
    read: ReaderDep,
    request: Request,
    project: Annotated[Id | None, Query(description="project id")] = None,
    user: Annotated[Id | None, Query(description="user id")] = None,
    state: Annotated[list[JobState] | None, Query(description="repeat for several")] = None,
    cluster: str | None = None,
    since: Annotated[Instant | None, Query(description="created at or after")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$",
                                        description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The jobs of the caller's members (every member for admins), newest first."""
    filters = repository.JobFilters(project_id=project, user_id=user, states=state or (),
                                    cluster=cluster, since=since)
    reads: JobReads = request.app.state.job_reads  # its items kept (JobReads.page)

    def page(session: Session) -> Response:
        return Response(reads.page(session, principal, filters,
                                   before_id=int(cursor) if cursor else None, limit=limit),
                        media_type="application/json")
    return await read(page)


@router.post("/jobs/{job_id}/cancel", response_model=JobDetail, operation_id="jobs-cancel",
             responses={202: {**_JOB, "description": "the cluster was asked to stop it"},
                        **problems(401, 403, 404, 409, 422, 503, 504)})
async def cancel_job(job_id: JobId, principal: Caller, jobs: JobServiceDep,
                     context: ContextDep) -> JSONResponse:
    """Idempotent: 200 once the job has ended (a job not yet submitted ends here), 202 while
    the cluster stops it; the tracker then records its end and charge."""
    outcome = await jobs.cancel(principal, job_id, context)
    return JSONResponse(outcome.job.model_dump(mode="json"), status_code=outcome.status)


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _wants_stream(request: Request, follow: bool) -> bool:
    return follow or EVENT_STREAM in request.headers.get("accept", "")


@router.get("/jobs/{job_id}/output", response_model=OutputOut, operation_id="jobs-output",
            responses={200: _sse_doc("output", "end"),
                       **problems(401, 403, 404, 409, 422, 503, 504)})
async def read_output(
    *,
    job_id: JobId,
    request: Request,
    principal: Caller,
    jobs: JobServiceDep,
    stream: OutputStream = OutputStream.stdout,
    offset: Annotated[Offset, Query()] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                       description="bytes; capped by the server")] = None,
    follow: Annotated[bool, Query(description="server-sent events until the job ends")] = False,
    task: Annotated[int | None, Query(ge=0, le=MAX_TASK_ID, description=(
        "a job array's task (required for an array, refused for a single job)"))] = None,
) -> Response:
    """A slice of the job's stdout or stderr, read from the cluster; `next_offset` reads on.
    A job array's tasks write their own: `task=N` reads task N's. With `follow=true` (or
    `Accept: text/event-stream`): `output` events as the job writes, then one `end` event
    (bounded in time)."""
    if not _wants_stream(request, follow):
        chunk = await jobs.read_output(principal, job_id, stream, offset, limit, task=task)
        return JSONResponse(chunk.model_dump(mode="json"))
    chunks = await jobs.follow_output(principal, job_id, stream, offset, task=task)

    async def events() -> AsyncIterator[str]:
        last: OutputOut | None = None
        async for chunk in chunks:
            last = chunk
            if chunk.data:
                yield _sse("output", chunk.model_dump(mode="json"))
        complete = last.complete if last else False
        yield _sse("end", {"complete": complete,
                           "next_offset": last.next_offset if last else offset})

    return StreamingResponse(events(), media_type=EVENT_STREAM,
                             headers={"Cache-Control": "no-cache"})


@router.get("/jobs/{job_id}/events", operation_id="jobs-events",
            responses={200: _sse_doc("state"), **problems(401, 403, 404, 422)})
async def job_events(
    job_id: JobId,
    principal: Caller,
    jobs: JobServiceDep,
    last_event_id: Annotated[Offset | None, Header(description="resume after this event")]
    = None,
) -> StreamingResponse:
    """Server-sent events of the job's state changes: those stored (after Last-Event-ID), then
    each new one; the stream ends after the job's final state (or after a bounded time)."""
    return state_stream(job_id, await jobs.job_events(principal, job_id, last_event_id or 0))


def state_stream(job_id: str, stored: AsyncIterator[JobEvent | None], *,
                 said: Callable[[str], str] = str) -> StreamingResponse:
    """The server-sent events of `stored` (None: nothing new yet), each event's detail as
    `said` words it (the web interface's, in its viewer's language)."""
    async def events() -> AsyncIterator[str]:
        quiet_since = anyio.current_time()
        async for event in stored:
            if event is not None:
                quiet_since = anyio.current_time()
                detail = None if event.detail is None else said(event.detail)
                yield _sse("state", {"job": job_id, "from_state": event.from_state,
                                     "to_state": event.to_state, "at": event.at.isoformat(),
                                     "detail": detail}, event.id)
            elif anyio.current_time() - quiet_since >= KEEPALIVE_SECONDS:
                quiet_since = anyio.current_time()
                yield ": keep-alive\n\n"

    return StreamingResponse(events(), media_type=EVENT_STREAM,
                             headers={"Cache-Control": "no-cache"})


_FILE = {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                             "format": "binary"}}}}


@router.get("/jobs/{job_id}/files", response_model=FileListing, operation_id="jobs-files-list",
            responses=problems(401, 403, 404, 409, 422, 503, 504))
async def list_job_files(
    job_id: JobId, principal: Caller, jobs: JobServiceDep,
    path: Annotated[str, Query(max_length=500, description=(
        "a directory of the job's working directory; default: the working directory")),
        AfterValidator(relative_path)] = "",
) -> FileListing:
    """The files and directories of the job's working directory (or of `path` in it), by
    name: name, type (`file` or `dir`), size and modification time."""
    return await jobs.list_job_files(principal, job_id, path)


@router.get("/jobs/{job_id}/files/{path:path}", response_class=Response,
            operation_id="jobs-files-get",
            responses={200: _FILE, **problems(401, 403, 404, 409, 422, 503, 504)})
async def download_job_file(job_id: JobId, path: FileInJob, principal: Caller,
                            jobs: JobServiceDep) -> Response:
    """A file of the job's working directory (a checkpoint, a result), size-capped. A
    directory is refused (422): list it with `GET /jobs/{job_id}/files?path=...`."""
    data = await jobs.get_job_file(principal, job_id, path)
    return _download(path, data)


def _download(path: str, data: bytes) -> Response:
    name = path.rsplit("/", 1)[-1].replace('"', "")
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


MemberSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


@router.put("/members/{member}/files/{path:path}", status_code=201,
            operation_id="member-files-put",
            responses=problems(401, 403, 404, 409, 413, 422, 503, 504))
async def upload_file(*, member: MemberSlug, path: FileInJob, request: Request,
                      principal: Caller, jobs: JobServiceDep, context: ContextDep,
                      cluster: str | None = None) -> dict[str, Any]:
    """Write a file (the request body, whole) into the member's work directory on a cluster.
    The body is capped at `jobs.file_max_bytes` while it is read (gateway.api.middleware)."""
    data = await request.body()
    written_on = await jobs.put_member_file(principal, member, cluster_name=cluster, path=path,
                                            data=data, context=context)
    return {"path": path, "size": len(data), "cluster": written_on}


@router.get("/members/{member}/files/{path:path}", response_class=Response,
            operation_id="member-files-get",
            responses={200: _FILE, **problems(401, 403, 404, 409, 422, 503, 504)})
async def download_file(member: MemberSlug, path: FileInJob, principal: Caller,
                        jobs: JobServiceDep, cluster: str | None = None) -> Response:
    """A file of the member's work directory on a cluster, size-capped."""
    data = await jobs.get_member_file(principal, member, cluster_name=cluster, path=path)
    return _download(path, data)
