"""`GET /api/v1/jobs/{id}`, the read clients poll, answered ahead of the framework's routing.

Each answer is still read from the database: one indexed query gives the job's owner, its
revision (bumped by triggers on every change of the job or a new event) and the auth epoch
(bumped by triggers on every change a principal is made of). When both match what an earlier
answer was built from, the caller's principal and the job's JSON are taken from bounded
in-process caches instead of being rebuilt: a revoked token, a suspended member, a changed role
or a new job state is seen by the next request, in every process. Anything else (no cache entry,
a refusal, an unknown job, another method) goes to the regular route, which also answers every
error, so this path only ever sends a 200 the route would have sent.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from cachetools import LRUCache
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from consortium import tokens
from consortium.authz import Principal, require
from consortium.authz import Scope as Right
from consortium.base import utcnow
from consortium.errors import DomainError
from consortium.models import AuthEpoch
from gateway.api.deps import read_threads
from gateway.auth.credentials import Credentials
from gateway.auth.principal import authenticate, bearer_token
from gateway.db import Database
from gateway.jobs import repository
from gateway.jobs.models import Job
from gateway.jobs.views import job_detail
from gateway.loop_reads import LoopReadFailed, LoopReads
from gateway.settings import Settings

JOB_PATH = re.compile(r"^/api/v1/jobs/([0-9a-f]{12})$")
CACHE_BYTES = 64 * 1024 * 1024  # jobs' JSON (a script may be large): bounded by size, not count

# One row whether the job exists or not (its owner and revision are then null): an unknown id
# and another member's job take the same path, and the same time, to the same 404.
_HEAD = (select(Job.member_id, Job.revision, AuthEpoch.value).select_from(AuthEpoch)
         .outerjoin(Job, Job.public_id == bindparam("public_id")))


@dataclass(frozen=True)
class _Answer:
    revision: int
    body: bytes


def _size(answer: _Answer) -> int:
    return len(answer.body)


def _bearer(scope: Scope) -> str | None:
    """The request's bearer token, read as gateway.auth.principal reads it (first header)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


class JobReads:
    """The jobs' answers and the reads behind them; one per app."""

    def __init__(self, database: Database, settings: Settings, credentials: Credentials,
                 loop_reads: LoopReads) -> None:
        self.database = database
        self.settings = settings
        self.credentials = credentials
        self._loop_reads = loop_reads  # the check: on the event loop, no thread hop
        self._lock = threading.Lock()  # the cache is shared by the loop and worker threads
        self._answers: LRUCache[str, _Answer] = LRUCache(CACHE_BYTES, getsizeof=_size)
        # answers being built, by (caller, job): the same reads asked meanwhile wait for it
        self._building: dict[tuple[str, str], asyncio.Event] = {}

    async def body(self, scope: Scope, public_id: str, token: str) -> bytes | None:
        """The job's JSON, or None for the route to answer (a miss that failed, a refusal)."""
        key = tokens.token_hash(token)
        # Built once for all who ask at the same time: when a caller's minute is up, every
        # poll of its 500 connections misses together, and building each (~4 ms of CPU)
        # would hold the last one for seconds.
        while True:
            decided, body = await self._from_caches(public_id, key)
            if decided:
                return body
            building = self._building.get((key, public_id))
            if building is None:
                break
            await building.wait()
        building = self._building[(key, public_id)] = asyncio.Event()
        try:
            return await anyio.to_thread.run_sync(self._fresh, scope, public_id, key,
                                                  limiter=read_threads())
        finally:
            del self._building[(key, public_id)]
            building.set()

    async def _from_caches(self, public_id: str, key: str) -> tuple[bool, bytes | None]:
        try:
            head = await self._loop_reads.first(_HEAD, {"public_id": public_id})
        except LoopReadFailed:
            return False, None  # read the usual way
        return self._cached(head, public_id, key)

    def _cached(self, head: Sequence[Any] | None, public_id: str,
                key: str) -> tuple[bool, bytes | None]:
        """From the job's head (owner, revision, epoch): (True, the cached answer) when the
        caller's principal and the answer are current; (True, None) for the route to answer
        (no such job, or not the caller's); (False, None) when it must be built."""
        if head is None:  # no epoch row: read the usual way
            return False, None
        member_id, revision, epoch = head
        principal = self.credentials.get(key, epoch)
        if principal is None:
            return False, None
        if member_id is None:
            return True, None
        try:
            require(principal, Right.jobs_read, member_id)
        except DomainError:
            return True, None
        with self._lock:
            answer = self._answers.get(public_id)
        if answer is None or answer.revision != revision:
            return False, None
        return True, answer.body

    def _fresh(self, scope: Scope, public_id: str, key: str) -> bytes | None:
        """The regular read, in one transaction whose first statement reads the epoch: what is
        cached is never labelled newer than what it was built from."""
        now = utcnow()
        with self.database.engine.connect() as conn:
            head = conn.execute(_HEAD, {"public_id": public_id}).first()
            if head is None:
                return None
            try:
                principal, built = self._build(conn, scope, public_id)
            except DomainError:
                return None  # the route answers it, as a problem
            conn.commit()  # a token's last use may have been stamped
        # kept even when the job is refused: the caller's next refusals (an unknown id and
        # another member's job alike) are then decided from the caches, without a build
        self.credentials.put(key, principal, head[2], read_at=now)
        if built is None:
            return None
        with self._lock:
            self._answers[public_id] = built
        return built.body

    def _build(self, conn: Connection, scope: Scope, public_id: str
               ) -> tuple[Principal, _Answer | None]:
        """Authentication and the job's detail (None if refused), as the route does them. The
        revision is read with the job's row, the events after it: a newer event only makes the
        label older."""
        with Session(bind=conn, expire_on_commit=False) as session:
            principal = authenticate(Request(scope), session, self.settings)
            try:
                job = repository.visible_job(session, principal, public_id, Right.jobs_read)
            except DomainError:
                session.commit()
                return principal, None
            body = job_detail(job, repository.events_of(session, job.id),
                              repository.tasks_of(session, job)).model_dump_json()
            session.commit()
            return principal, _Answer(job.revision, body.encode())


class JobReadPath:
    """ASGI middleware: sends the job's JSON when JobReads has it, else hands on to the app."""

    def __init__(self, app: ASGIApp, *, reads: JobReads) -> None:
        self.app = app
        self.reads = reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (JOB_PATH.match(scope["path"])
                 if scope["type"] == "http" and scope["method"] == "GET" else None)
        token = _bearer(scope) if match else None
        body = await self.reads.body(scope, match.group(1), token) if match and token else None
        if body is None:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
