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

import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from cachetools import LRUCache
from sqlalchemy import Connection, Engine, PoolProxiedConnection, bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import SingletonThreadPool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from consortium import tokens
from consortium.authz import Principal, require
from consortium.authz import Scope as Right
from consortium.base import utcnow
from consortium.errors import DomainError
from consortium.models import AuthEpoch
from gateway.api.deps import read_threads
from gateway.auth.principal import authenticate, bearer_token
from gateway.db import Database, make_engine
from gateway.jobs import repository
from gateway.jobs.models import Job
from gateway.jobs.views import job_detail
from gateway.settings import Settings

JOB_PATH = re.compile(r"^/api/v1/jobs/([0-9a-f]{12})$")
# A cached principal is re-authenticated at least this often, whatever the epoch says: a PAT's
# last use is stamped once a minute, and a change made behind the triggers' back still ends.
PRINCIPAL_LIFETIME = timedelta(seconds=60)
CACHE_ENTRIES = 4096  # callers
CACHE_BYTES = 64 * 1024 * 1024  # jobs' JSON (a script may be large): bounded by size, not count

_HEAD = (select(Job.member_id, Job.revision, select(AuthEpoch.value).scalar_subquery())
         .where(Job.public_id == bindparam("public_id")))


@dataclass(frozen=True)
class _Credential:
    principal: Principal
    epoch: int
    until: datetime


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
    """The caches and the reads behind them; one per app, closed with it."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        # SQLite answers the check in microseconds: it runs on the event loop, no thread hop, on
        # a connection of its own (waiting for a busy pool would stall the loop), through the
        # driver (the statement is compiled once; it returns three integers, nothing to convert)
        self._loop_engine = (make_engine(database.url, poolclass=SingletonThreadPool)
                             if database.dialect == "sqlite" else None)
        self._loop_connection: PoolProxiedConnection | None = None
        self._head_sql = str(_HEAD.compile(dialect=database.engine.dialect))
        self._lock = threading.Lock()  # the caches are shared by the loop and worker threads
        self._credentials: LRUCache[str, _Credential] = LRUCache(CACHE_ENTRIES)
        self._answers: LRUCache[str, _Answer] = LRUCache(CACHE_BYTES, getsizeof=_size)

    def close(self) -> None:
        if self._loop_connection is not None:
            self._loop_connection.close()
        if self._loop_engine is not None:
            self._loop_engine.dispose()

    async def body(self, scope: Scope, public_id: str, token: str) -> bytes | None:
        """The job's JSON, or None for the route to answer (a miss that failed, a refusal)."""
        key = tokens.token_hash(token)
        if self._loop_engine is not None:
            decided, body = self._cached(self._head_on_loop(self._loop_engine, public_id),
                                         public_id, key)
            if decided:
                return body
        return await anyio.to_thread.run_sync(self._read, scope, public_id, key,
                                              limiter=read_threads())

    def _read(self, scope: Scope, public_id: str, key: str) -> bytes | None:
        if self._loop_engine is None:
            with self.database.engine.connect() as conn:
                head = conn.execute(_HEAD, {"public_id": public_id}).first()
            decided, body = self._cached(head, public_id, key)
            if decided:
                return body
        return self._fresh(scope, public_id, key)

    def _head_on_loop(self, engine: Engine, public_id: str) -> tuple[int, int, int] | None:
        if self._loop_connection is None:
            self._loop_connection = engine.raw_connection()
        cursor = self._loop_connection.cursor()
        try:
            cursor.execute(self._head_sql, (public_id,))
            row: tuple[int, int, int] | None = cursor.fetchone()
            return row
        finally:
            cursor.close()

    def _cached(self, head: tuple[int, int, int] | None, public_id: str, key: str
                ) -> tuple[bool, bytes | None]:
        """From the job's head (owner, revision, epoch): (True, the cached answer) when both
        caches are current; (True, None) for the route to answer (no such job, or not the
        caller's); (False, None) when it must be built."""
        now = utcnow()
        if head is None:
            return True, None
        member_id, revision, epoch = head
        with self._lock:
            credential = self._credentials.get(key)
            answer = self._answers.get(public_id)
        if (credential is None or credential.epoch != epoch or now >= credential.until
                or answer is None or answer.revision != revision):
            return False, None
        try:
            require(credential.principal, Right.jobs_read, member_id)
        except DomainError:
            return True, None
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
                principal, revision, body = self._build(conn, scope, public_id)
            except DomainError:
                return None  # the route answers it, as a problem
            conn.commit()  # a token's last use may have been stamped
        until = now + PRINCIPAL_LIFETIME
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        with self._lock:
            self._credentials[key] = _Credential(principal, head[2], until)
            self._answers[public_id] = _Answer(revision, body)
        return body

    def _build(self, conn: Connection, scope: Scope, public_id: str
               ) -> tuple[Principal, int, bytes]:
        """Authentication and the job's detail, as the route does them. The revision is read
        with the job's row, the events after it: a newer event only makes the label older."""
        with Session(bind=conn, expire_on_commit=False) as session:
            principal = authenticate(Request(scope), session, self.settings)
            job = repository.visible_job(session, principal, public_id, Right.jobs_read)
            body = job_detail(job, repository.events_of(session, job.id)).model_dump_json()
            session.commit()
            return principal, job.revision, body.encode()


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
