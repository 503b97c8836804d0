"""A job's detail as clients poll it (GET /api/v1/jobs/{id}): its JSON kept by job under the
job's revision, so that a poll of an unchanged job costs one indexed read and no thread hop.

The revision is bumped by database triggers on every change of the job's row and on each new
event, whoever writes (migration 0005); it is also the answer's ETag. The check reads the job's
owner and revision on the event loop (gateway.loop_reads), with the auth epoch in the same read
(the route checks its kept caller against it: one read per poll), and authorizes the caller,
already authenticated, against that owner. Whatever the check cannot answer (a job not kept or
changed, an unknown one, another member's, a failed read) is read in a worker thread as any read
is, and refused there with the same errors.

A page of the jobs list (GET /api/v1/jobs) keeps each job's item the same way, in the reads'
worker thread and transaction: see JobReads.page.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass

import anyio
from cachetools import LRUCache
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from consortium.authz import Principal, Scope, require
from consortium.errors import DomainError
from consortium.models import AuthEpoch
from gateway.db import Database
from gateway.jobs import repository
from gateway.jobs.models import Job
from gateway.jobs.views import job_detail, job_out
from gateway.loop_reads import LoopReadFailed, LoopReads

# Bounded by size, not count (a script may be large), and within each worker's memory floor
# (150 MiB, issue 10; ~115 MiB of it is the imported code): the details of a few thousand
# polled jobs, the list items (~1 KB, no script) of several thousand.
CACHE_BYTES = 16 * 1024 * 1024
ITEM_CACHE_BYTES = 8 * 1024 * 1024

# The heads of the polls that arrived while the previous read was on its way, or in the same
# turn of the event loop (JobReads.head)
_HEADS = (select(Job.public_id, Job.member_id, Job.revision,
                 select(AuthEpoch.value).scalar_subquery())
          .where(Job.public_id.in_(bindparam("public_ids", expanding=True))))
HEADS_PER_READ = 500  # within SQLite's bound variables (32,766) and PostgreSQL's (65,535)


@dataclass(frozen=True)
class JobHead:
    """What a poll reads first: the job's owner and revision, and the auth epoch."""

    member_id: int
    revision: int
    auth_epoch: int


@dataclass(frozen=True)
class JobAnswer:
    revision: int
    body: bytes  # the JobDetail's JSON (a list's item: the JobOut's)


def _size(answer: JobAnswer) -> int:
    return len(answer.body)


class JobReads:
    """The jobs' kept answers; one per app, shared by the event loop and worker threads."""

    def __init__(self, database: Database, loop_reads: LoopReads) -> None:
        self._database = database
        self._loop_reads = loop_reads
        self._lock = threading.Lock()
        self._answers: LRUCache[str, JobAnswer] = LRUCache(CACHE_BYTES, getsizeof=_size)
        self._items: LRUCache[str, JobAnswer] = LRUCache(ITEM_CACHE_BYTES, getsizeof=_size)
        # answers being built, by job: the same reads asked meanwhile wait for it
        self._building: dict[str, anyio.Event] = {}
        # the heads asked and not yet read, by job (JobReads.head), and their loop
        self._asked: dict[str, asyncio.Future[JobHead | None]] = {}
        self._asked_loop: asyncio.AbstractEventLoop | None = None
        self._reading: asyncio.Task[None] | None = None

    async def head(self, public_id: str) -> JobHead | None:
        """The job's head, read on the event loop with those of every poll that arrives
        meanwhile; None for an unknown job or a failed read.

        One read for all the polls of a turn of the event loop (SQLite), or of a round trip
        (PostgreSQL), each started after every poll it answers arrived: none gets an older
        head than its own read would have. With 500 clients on 2 workers (bench/edge.py), a
        PostgreSQL read per poll (its round trip, the server's work, two process switches)
        held polls to 2,600/s, and SQLite's in-process read was ~9% of a poll's CPU."""
        loop = asyncio.get_running_loop()
        if self._asked_loop is not loop:  # a future belongs to its loop
            self._asked, self._asked_loop, self._reading = {}, loop, None
        asked = self._asked.get(public_id)
        if asked is None:
            asked = self._asked[public_id] = loop.create_future()
        if self._reading is None:
            self._reading = loop.create_task(self._read_heads())
        # shielded: a poll that goes away must not cancel the read the others wait for
        return await asyncio.shield(asked)

    async def _read_heads(self) -> None:
        """Read the heads asked, in one statement, until none is left to read."""
        asked: dict[str, asyncio.Future[JobHead | None]] = {}
        try:
            while self._asked:
                asked = dict(itertools.islice(self._asked.items(), HEADS_PER_READ))
                for public_id in asked:
                    del self._asked[public_id]
                try:
                    rows = await self._loop_reads.all(_HEADS, {"public_ids": list(asked)})
                except LoopReadFailed:
                    rows = []  # each poll then reads the usual way
                found = {row[0]: JobHead(*row[1:]) for row in rows}
                for public_id, future in asked.items():
                    if not future.done():
                        future.set_result(found.get(public_id))
        finally:
            self._reading = None
            # ended by an error or with its loop: the polls still waiting read the usual way
            for future in (*asked.values(), *self._asked.values()):
                if not future.done():
                    future.set_result(None)
            self._asked = {}

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

    def page(self, session: Session, principal: Principal, filters: repository.JobFilters, *,
             before_id: int | None, limit: int) -> bytes:
        """A page of the caller's jobs, the JSON of Page[JobOut], read in `session`.

        Each job's item (its JobOut's JSON) is kept under its revision, which the triggers also
        bump on each change of an array's tasks (migration 0006), so counts are never stale. A
        page is one indexed query of its jobs' (id, public_id, revision), the kept items, and
        one read (without scripts) of the jobs changed since: building 50 items from rows cost
        ~9 ms of CPU, the list's floor (issue 10: >= 600 pages/s on 2 cores) allows ~1.2 ms."""
        heads = repository.list_heads(session, principal, filters, before_id=before_id,
                                      limit=limit + 1)
        shown = heads[:limit]
        items: dict[str, bytes] = {}
        missing: list[int] = []
        with self._lock:
            for job_id, public_id, revision in shown:
                answer = self._items.get(public_id)
                if answer is not None and answer.revision == revision:
                    items[public_id] = answer.body
                else:
                    missing.append(job_id)
        if missing:
            jobs = repository.listed_jobs(session, missing)
            counts = repository.task_counts(session, jobs)
            # kept under the revision read with the row: counts read after it are as new or
            # newer, which only makes the label older
            built = {job.public_id: JobAnswer(job.revision, job_out(
                job, counts.get(job.id, {})).model_dump_json().encode()) for job in jobs}
            with self._lock:
                self._items.update(built)
            items.update((public_id, answer.body) for public_id, answer in built.items())
        cursor = b'"%d"' % shown[-1][0] if len(heads) > limit else b"null"
        return b'{"items":[%s],"next_cursor":%s}' % (
            # a job gone between the two reads (each its own snapshot on PostgreSQL) is left out
            b",".join(items[public_id] for _, public_id, _ in shown if public_id in items), cursor)
