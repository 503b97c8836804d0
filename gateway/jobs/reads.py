"""A job's detail as clients poll it (GET /api/v1/jobs/{id}): its JSON kept by job under the
job's revision, so that a poll of an unchanged job costs one indexed read and no thread hop.

The revision is bumped by database triggers on every change of the job's row and on each new
event, whoever writes (migration 0005); it is also the answer's ETag. The check reads the job's
owner and revision on the event loop (gateway.loop_reads), with the auth epoch in the same read
(the route checks its kept caller against it: one read per poll), and authorizes the caller,
already authenticated, against that owner. Whatever the check cannot answer (a job not kept or
changed, an unknown one, another member's, a failed read) is read in a worker thread as any read
is, and refused there with the same errors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import anyio
from cachetools import LRUCache
from sqlalchemy import bindparam, select

from consortium.authz import Principal, Scope, require
from consortium.errors import DomainError
from consortium.models import AuthEpoch
from gateway.db import Database
from gateway.jobs import repository
from gateway.jobs.models import Job
from gateway.jobs.views import job_detail
from gateway.loop_reads import LoopReadFailed, LoopReads

CACHE_BYTES = 64 * 1024 * 1024  # jobs' JSON (a script may be large): bounded by size, not count

_HEAD = (select(Job.member_id, Job.revision, select(AuthEpoch.value).scalar_subquery())
         .where(Job.public_id == bindparam("public_id")))


@dataclass(frozen=True)
class JobHead:
    """What a poll reads first: the job's owner and revision, and the auth epoch."""

    member_id: int
    revision: int
    auth_epoch: int


@dataclass(frozen=True)
class JobAnswer:
    revision: int
    body: bytes  # the JobDetail's JSON


def _size(answer: JobAnswer) -> int:
    return len(answer.body)


class JobReads:
    """The jobs' kept answers; one per app, shared by the event loop and worker threads."""

    def __init__(self, database: Database, loop_reads: LoopReads) -> None:
        self._database = database
        self._loop_reads = loop_reads
        self._lock = threading.Lock()
        self._answers: LRUCache[str, JobAnswer] = LRUCache(CACHE_BYTES, getsizeof=_size)
        # answers being built, by job: the same reads asked meanwhile wait for it
        self._building: dict[str, anyio.Event] = {}

    async def head(self, public_id: str) -> JobHead | None:
        """The job's head read on the event loop; None for an unknown job or a failed read."""
        try:
            row = await self._loop_reads.first(_HEAD, {"public_id": public_id})
        except LoopReadFailed:
            return None
        return JobHead(*row) if row is not None else None

    async def detail(self, principal: Principal, public_id: str,
                     head: JobHead | None = None) -> JobAnswer:
        """The job's detail for `principal`; the refusals of repository.visible_job. `head`:
        the job's, just read by the caller (read here otherwise)."""
        while True:
            answer = self._kept(principal, public_id, head or await self.head(public_id))
            head = None  # read again after waiting for a build
            if answer is not None:
                return answer
            # Built once for all who ask at the same time (~4 ms of CPU each): when a job
            # changes, the polls of all its clients miss together.
            building = self._building.get(public_id)
            if building is None:
                break
            await building.wait()
        building = self._building[public_id] = anyio.Event()
        try:
            return await anyio.to_thread.run_sync(self._fresh, principal, public_id)
        finally:
            del self._building[public_id]
            building.set()

    def _kept(self, principal: Principal, public_id: str,
              head: JobHead | None) -> JobAnswer | None:
        """The kept answer if it is current and the caller may read it; None otherwise."""
        if head is None:
            return None
        try:
            require(principal, Scope.jobs_read, head.member_id)
        except DomainError:
            return None  # the thread read decides, and words the refusal
        with self._lock:
            answer = self._answers.get(public_id)
        return answer if answer is not None and answer.revision == head.revision else None

    def _fresh(self, principal: Principal, public_id: str) -> JobAnswer:
        """The job read and kept under the revision read with its row (its events are read
        after it: a newer event only makes the label older)."""
        with self._database.transaction(write=False) as session:
            job = repository.visible_job(session, principal, public_id, Scope.jobs_read)
            detail = job_detail(job, repository.events_of(session, job.id),
                                repository.tasks_of(session, job))
            answer = JobAnswer(job.revision, detail.model_dump_json().encode())
        with self._lock:
            self._answers[public_id] = answer
        return answer
