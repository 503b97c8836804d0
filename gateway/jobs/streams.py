"""What a job writes and what becomes of it, read or followed: its output (an array's, per
task) and its state events."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator

import anyio
from sqlalchemy.orm import Session

from consortium.authz import Principal, Scope
from gateway.jobs import repository
from gateway.jobs.actions import JobActions
from gateway.jobs.arrays import parse_array
from gateway.jobs.clusters import Cluster
from gateway.jobs.errors import JobInputInvalid
from gateway.jobs.models import Job, JobEvent
from gateway.jobs.schemas import OutputOut, OutputStream
from schedulers.base import task_path
from schedulers.errors import SchedulerError, SchedulerRejected
from schedulers.models import Identity


class Streams(JobActions):
    """Reading and following a job's output and events."""

    def _output_target(self, session: Session, principal: Principal, public_id: str,
                       task: int | None) -> tuple[Job, Cluster, Identity, bool]:
        """The job whose output is read (an array's: one task's, which must be named), and
        whether that output is final."""
        job, cluster, identity = self._target(session, principal, public_id, Scope.jobs_read)
        _check_task(job, task)
        return job, cluster, identity, repository.output_ended(session, job, task)

    async def read_output(self, principal: Principal, public_id: str, stream: OutputStream,
                          offset: int, limit: int | None, *, task: int | None = None
                          ) -> OutputOut:
        job, cluster, identity, ended = await self._db(
            lambda s: self._output_target(s, principal, public_id, task), write=False)
        return await self._read_chunk(job, cluster, identity, stream=stream, offset=offset,
                                      limit=limit, task=task, ended=ended)

    async def _read_chunk(self, job: Job, cluster: Cluster, identity: Identity, *,
                          stream: OutputStream, offset: int, limit: int | None,
                          task: int | None, ended: bool) -> OutputOut:
        limit = min(limit or self.settings.output_default_limit, self.settings.output_max_limit)
        path = job.stdout_path if stream is OutputStream.stdout else job.stderr_path
        if task is not None:
            path = task_path(path, task)
        if job.scheduler_id is None:
            return OutputOut(stream=stream, offset=offset, next_offset=offset, size=0, data="",
                             complete=ended, task=task)
        try:
            chunk = await cluster.scheduler.read_output(identity, path, offset, limit)
        except SchedulerRejected:  # not written yet (the job has not started)
            return OutputOut(stream=stream, offset=offset, next_offset=offset, size=0, data="",
                             complete=ended, task=task)
        except SchedulerError as exc:
            raise self._cluster_error(cluster, exc) from exc
        at_end = chunk.next_offset >= chunk.size
        text, used = decode_utf8(chunk.data, final=at_end and ended)
        next_offset = chunk.offset + used
        return OutputOut(stream=stream, offset=chunk.offset, next_offset=next_offset,
                         size=chunk.size, data=text, complete=ended and next_offset >= chunk.size,
                         task=task)

    async def follow_output(self, principal: Principal, public_id: str, stream: OutputStream,
                            offset: int, *, task: int | None = None
                            ) -> AsyncIterator[OutputOut]:
        """Chunks as the job (an array's task) writes them, until it has ended and all is read
        (or the stream's time is up). The first read checks the caller's rights (and the task)
        before anything is sent."""
        _, cluster, identity, _ = await self._db(
            lambda s: self._output_target(s, principal, public_id, task), write=False)
        return self._follow(public_id, cluster, identity, stream, offset, task=task)

    async def _follow(self, public_id: str, cluster: Cluster, identity: Identity,
                      stream: OutputStream, offset: int, *, task: int | None
                      ) -> AsyncIterator[OutputOut]:
        deadline = anyio.current_time() + self.settings.stream_max_seconds

        def read(session: Session) -> tuple[Job, bool]:
            job = repository.job_by_public_id(session, public_id)
            return job, repository.output_ended(session, job, task)
        while True:
            job, ended = await self._db(read, write=False)
            chunk = await self._read_chunk(job, cluster, identity, stream=stream, offset=offset,
                                           limit=self.settings.output_max_limit, task=task,
                                           ended=ended)
            if chunk.data or chunk.complete:
                yield chunk
            offset = chunk.next_offset
            if chunk.complete or anyio.current_time() >= deadline:
                return
            if chunk.next_offset >= chunk.size:
                await anyio.sleep(self.settings.stream_poll_seconds)

    async def job_events(self, principal: Principal, public_id: str, after_id: int
                         ) -> AsyncIterator[JobEvent | None]:
        """Stored events after `after_id`, then new ones as they are stored, until the job has
        ended and its last event was sent, or the stream's time is up. None is a keep-alive
        (nothing new this time). Rights are checked before the stream starts."""
        job = await self._db(
            lambda s: repository.visible_job(s, principal, public_id, Scope.jobs_read),
            write=False)
        return self._events(job.id, after_id)

    async def _events(self, job_id: int, after_id: int) -> AsyncIterator[JobEvent | None]:
        deadline = anyio.current_time() + self.settings.stream_max_seconds
        while True:
            def read(session: Session, after_id: int = after_id) -> tuple[bool, list[JobEvent]]:
                # the state first: an ended job's last event is then among those read after
                ended = session.get_one(Job, job_id).state.terminal
                return ended, repository.events_of(session, job_id, after_id=after_id)
            ended, events = await self._db(read, write=False)
            for event in events:
                after_id = event.id
                yield event
            if ended or anyio.current_time() >= deadline:
                return
            if not events:
                yield None
            await anyio.sleep(self.settings.stream_poll_seconds)


def _check_task(job: Job, task: int | None) -> None:
    """An array's output is read per task, named by `?task=`; a single job's has none."""
    array = job.array
    if array is None and task is None:
        return
    if array is None:
        problem = "this job is not an array; leave `task` out"
    elif task is None:
        problem = f"this job is an array ({array}): name the task whose output to read"
    elif task not in parse_array(array).task_ids:
        problem = f"task {task} is not in the array {array}"
    else:
        return
    raise JobInputInvalid([{"loc": ["query", "task"], "msg": problem, "type": "value_error"}])

def decode_utf8(data: bytes, *, final: bool) -> tuple[str, int]:
    """The text of `data` and the bytes it used: a character cut by the end of the chunk is
    left for the next read (unless `final`); invalid bytes become U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data, final=final)
    held_back, _ = decoder.getstate()
    return text, len(data) - len(held_back)
