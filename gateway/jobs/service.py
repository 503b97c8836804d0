"""Submission, cancellation, output and files: the job actions a caller asks for.

The order of a submission never changes: validate → quote → one transaction (the job
`accepted`, its quota hold, the audit event, and the job marked `submitting`) → commit → the
scheduler call with the job's marker, outside any transaction and off the event loop → the
outcome stored, the answer read in that same transaction. A crash anywhere leaves a row the
tracker settles by marker: no hold without a job, no Slurm job without a row, never a second
sbatch for one job.

JobService owns its transactions (each a short `database.transaction()` in a worker thread)
because it must commit between steps; the functions it calls only add and flush.
"""

from __future__ import annotations

import codecs
import contextlib
import posixpath
import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote as quote_url

import anyio
from cachetools import LRUCache
from sqlalchemy import bindparam, inspect, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from consortium.audit import RequestContext, record
from consortium.authz import Principal, Scope, require
from consortium.base import utcnow
from consortium.errors import DomainError, NotFound, PermissionDenied
from consortium.models import Outcome
from consortium.service import get_member
from gateway.db import Database
from gateway.jobs import directives, health, idempotency, quoting, repository
from gateway.jobs.admission import (
    admit,
    amounts_of,
    cluster_account,
    over_job_cap,
    partition_errors,
    resolve_project,
)
from gateway.jobs.arrays import parse_array
from gateway.jobs.clusters import Cluster, Clusters, identity_for
from gateway.jobs.config import JobsSettings
from gateway.jobs.errors import (
    ClusterTimeout,
    ClusterUnavailable,
    FileTooLarge,
    JobInputInvalid,
    SchedulerLimitReached,
    SubmissionRejected,
    TooManyActiveJobs,
)
from gateway.jobs.models import Job, JobEvent, JobState, JobTask
from gateway.jobs.resolve import Resolved, resolve
from gateway.jobs.schemas import (
    FileEntryOut,
    FileListing,
    JobCreate,
    JobDetail,
    JobQuote,
    OutputOut,
    OutputStream,
)
from gateway.jobs.transitions import first_event, transition
from gateway.jobs.views import job_detail
from gateway.webhooks import service as webhooks
from quotas import service as quotas
from quotas.errors import QuotaExceeded
from schedulers.base import Staged, task_path
from schedulers.errors import (
    IsADirectory,
    NotADirectory,
    PathRefused,
    SchedulerError,
    SchedulerRejected,
    SchedulerTimeout,
)
from schedulers.models import Identity, JobSpec, Resources

T = TypeVar("T")
SYSTEM = "system"
ROUTES_CACHED = 4096  # (project, cluster) pairs whose next submission is staged
# Slurm's refusals that are limits of the account or QOS (a conflict with the current state)
_LIMIT_REFUSAL = re.compile(r"(QOS|Assoc)\w*Limit|job submit limit|Job violates accounting")


def new_public_id() -> str:
    return secrets.token_hex(6)


def marker_for(cluster: str, public_id: str) -> str:
    return f"hpcgw:{cluster}:{public_id}"



def job_spec(request: JobCreate, resolved: Resolved, public_id: str, cluster: str,
             account: str | None, *, script: str) -> JobSpec:
    """What the scheduler is sent for a job: the script with its directive lines made comments
    (every value sbatch could read there is on the command line), its output files named by
    the job's id unless the script's `--output`/`--error` named them."""
    workdir = request.workdir
    return JobSpec(
        marker=marker_for(cluster, public_id), name=resolved.name,
        script=directives.neutralised(script), account=account,
        resources=Resources(**resolved.resources.model_dump()),
        environment=dict(request.environment), workdir=workdir,
        stdout=posixpath.join(workdir, resolved.stdout or f"hpcgw-{public_id}.out"),
        stderr=posixpath.join(workdir, resolved.stderr or f"hpcgw-{public_id}.err"),
    )


_REVISION = select(Job.revision).where(Job.id == bindparam("job_id"))
_REVISION_LOCKED = _REVISION.add_columns(
    Job.project_id, webhooks.has_subscriptions(Job.project_id)).with_for_update(of=Job)


@dataclass(frozen=True)
class Accepted:
    job_id: int
    public_id: str
    member_id: int
    cluster: Cluster
    identity: Identity
    spec: JobSpec
    # the job and its events as the accepting transaction committed them, and the revision
    # the triggers left: the answer is built from them when nothing changed the job since
    job: Job
    events: tuple[JobEvent, ...]
    revision: int


def _loaded_as_inserted(job: Job, revision: int) -> None:
    """Tell the ORM what the job's row holds after its INSERT, so that the detached job answers
    without being read again: the columns left out are NULL (those without a server default)
    and the revision is what the triggers made of it."""
    columns = Job.__table__.c
    for name in inspect(job).unloaded:
        if name == "revision":
            set_committed_value(job, name, revision)
        elif name in columns and columns[name].server_default is None:
            set_committed_value(job, name, None)


@dataclass(frozen=True)
class _Route:
    """Where a project's jobs went on a cluster at its last accepted submission."""

    member_id: int
    identity: Identity
    account: str | None


@dataclass(frozen=True)
class Submission:
    """201: on the cluster with its id. 202: outcome unknown, the tracker settles it. With an
    Idempotency-Key, this answer is already stored as the key's response."""

    status: int
    job: JobDetail


@dataclass(frozen=True)
class CancelOutcome:
    status: int  # 200: the job has ended (now or before); 202: the cluster was asked
    job: JobDetail


class JobService:
    def __init__(self, database: Database, clusters: Clusters, settings: JobsSettings) -> None:
        self.database = database
        self.clusters = clusters
        self.settings = settings
        # (project, cluster) as requested -> its route, to stage the next submission's sbatch
        # while its job is accepted (only a hint: the accepted job is compared with it)
        self._routes: LRUCache[tuple[int | str, str | None], _Route] = LRUCache(ROUTES_CACHED)

    async def _db(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """`fn` in a transaction of its own, in a worker thread (never on the event loop)."""
        def run() -> T:
            with self.database.transaction(write=write) as session:
                return fn(session)
        return await anyio.to_thread.run_sync(run)

    def _detail(self, session: Session, job_id: int) -> JobDetail:
        job = session.get_one(Job, job_id, populate_existing=True)
        return job_detail(job, repository.events_of(session, job.id),
                          repository.tasks_of(session, job))

    # --- submission ----------------------------------------------------------------------

    async def submit(self, principal: Principal, request: JobCreate, context: RequestContext,
                     *, idempotency_record: int | None = None) -> Submission:
        await self._refuse_if_known_down(request.cluster)
        public_id = new_public_id()
        staged = self._stage(principal, request, public_id)
        try:
            return await self._submit(principal, request, context, public_id=public_id,
                                      staged=staged, idempotency_record=idempotency_record)
        finally:
            if staged is not None:
                staged.discard()

    async def _refuse_if_known_down(self, cluster_name: str | None) -> None:
        """503 within a second, before anything is written, when the cluster was found
        unreachable and a probe finds it still so: not another wait for sbatch's own timeout
        (gateway.jobs.health)."""
        cluster = self.clusters.get(cluster_name)
        down = await health.still_down(cluster.scheduler, self.settings.down_probe_seconds)
        if down is not None:
            raise ClusterUnavailable(
                f"cluster {cluster.name} cannot be reached ({down}); nothing was submitted "
                f"and nothing held", retry_after=self.settings.retry_after_seconds)

    def _stage(self, principal: Principal, request: JobCreate, public_id: str) -> Staged | None:
        """The submission staged on the cluster, as the project's last accepted job went
        there, if the caller may submit for its member: it starts while the job is accepted
        and is discarded unless the accepted job is the same (a member whose account changed
        meanwhile is submitted as usual)."""
        route = self._routes.get((request.project, request.cluster))
        if route is None:
            return None
        try:
            cluster = self.clusters.get(request.cluster)
            require(principal, Scope.jobs_write, route.member_id)
            # a template's resources are known once it is rendered, after acceptance
            resolved = resolve(request, request.script) if request.template is None else None
        except DomainError:
            return None
        if resolved is None:
            return None
        partition = cluster.config.partition(resolved.resources.partition)
        if partition is None or partition_errors(partition, resolved.resources):
            return None
        # the script is sent after acceptance
        spec = job_spec(request, resolved, public_id, cluster.name, route.account,
                        script=request.script or "#!/bin/sh")
        try:
            return cluster.scheduler.stage(route.identity, spec)
        except SchedulerError:
            return None  # the transport is closing: the submission says so

    async def _submit(self, principal: Principal, request: JobCreate, context: RequestContext,
                      *, public_id: str, staged: Staged | None,
                      idempotency_record: int | None) -> Submission:
        try:
            accepted = await self._db(lambda s: self._accept(
                s, principal, request, context, idempotency_record, public_id=public_id,
                submitting=True))
        except (PermissionDenied, QuotaExceeded, TooManyActiveJobs) as exc:
            refusal = exc
            await self._db(lambda s: self._audit_refusal(s, principal, request, context, refusal))
            raise
        self._routes[(request.project, request.cluster)] = _Route(
            accepted.member_id, accepted.identity, accepted.spec.account)
        job_id = accepted.job_id
        scheduler = accepted.cluster.scheduler
        try:
            submitted = await (staged or Staged(scheduler)).submit(accepted.identity,
                                                                   accepted.spec)
        except SchedulerError as exc:
            health.failed(scheduler, exc)
            return await self._not_submitted(accepted, exc, context, idempotency_record)
        except BaseException:
            # anything else (a bug, a cancelled request): the script may have gone; the
            # tracker settles the job by its marker
            with anyio.CancelScope(shield=True):
                await self._db(lambda s: self._unknown(s, job_id, "submission interrupted"))
            raise
        health.reached(scheduler)

        def store(session: Session) -> tuple[bool, bool, JobDetail | None]:
            job, events = self._as_accepted(session, accepted)
            stored, cancel_wanted, event = self._submitted(session, job, submitted.scheduler_id)
            if cancel_wanted:  # the answer comes once the cancel is sent
                return stored, cancel_wanted, None
            if events is not None and event is not None:
                session.flush()  # the new event's id
                events.append(event)
            return stored, cancel_wanted, self._answer(session, job, 201, idempotency_record,
                                                       events=events)
        stored, cancel_wanted, detail = await self._db(store)
        if not stored:
            # the tracker gave the job up meanwhile (it should not: its grace outlasts any
            # submit call): the cluster must not keep a job that has no live row
            with contextlib.suppress(SchedulerError):
                await scheduler.cancel(accepted.identity, submitted.scheduler_id)
        elif cancel_wanted:
            await self._send_cancel(job_id, accepted.cluster, accepted.identity,
                                    submitted.scheduler_id, strict=False)
        if detail is None:
            detail = await self._db(
                lambda s: self._answer(s, s.get_one(Job, job_id), 201, idempotency_record))
        return Submission(201, detail)

    @staticmethod
    def _answer(session: Session, job: Job, status: int, idempotency_record: int | None, *,
                events: Sequence[JobEvent] | None = None) -> JobDetail:
        """The job as the response shows it (as this transaction left it; its events read
        unless known), stored as the response to the request's Idempotency-Key (if any) with
        the outcome it shows."""
        if events is None:
            events = repository.events_of(session, job.id)
        detail = job_detail(job, events, repository.tasks_of(session, job))
        if idempotency_record is not None:
            idempotency.complete(session, idempotency_record, status,
                                 detail.model_dump(mode="json"))
        return detail

    async def _not_submitted(self, accepted: Accepted, exc: SchedulerError,
                             context: RequestContext,
                             idempotency_record: int | None) -> Submission:
        """The scheduler call failed: in doubt (the script may have gone) the job is `unknown`
        and 202; otherwise `submit_failed`, its hold released, and the refusal raised."""
        job_id, message = accepted.job_id, _describe(exc)
        if exc.maybe_executed:
            def unknown(session: Session) -> JobDetail:
                job = self._unknown(session, job_id, message)
                return self._answer(session, job, 202, idempotency_record)
            return Submission(202, await self._db(unknown))
        reason = exc.message if isinstance(exc, SchedulerRejected | PathRefused) else message
        await self._db(lambda s: self._submit_failed(s, job_id, reason, context))
        if isinstance(exc, PathRefused):
            raise JobInputInvalid.at(("workdir",), exc.message) from exc
        if isinstance(exc, SchedulerRejected):
            refusal = (SchedulerLimitReached if _LIMIT_REFUSAL.search(exc.message)
                       else SubmissionRejected)
            raise refusal(exc.message, job=accepted.public_id) from exc
        raise ClusterUnavailable(
            f"cluster {accepted.cluster.name} cannot be reached; nothing was submitted and the "
            f"hold was released ({message})",
            retry_after=self.settings.retry_after_seconds, job=accepted.public_id) from exc

    def _accept(self, session: Session, principal: Principal, request: JobCreate,
                context: RequestContext, idempotency_record: int | None, *,
                public_id: str | None = None, submitting: bool = False) -> Accepted:
        """The job `accepted` with its hold and audit event; `submitting` too when the caller
        sends it once this commits: from then on the script may be on its way, so a crash is
        settled by marker and a cancel asked meanwhile is sent once the cluster's id is
        stored."""
        public_id = public_id or new_public_id()
        admitted = admit(session, self.clusters, principal, request, public_id, lock_member=True)
        over_cap = over_job_cap(admitted, self.settings)
        if over_cap is not None:
            raise over_cap
        project, member, cluster = admitted.project, admitted.member, admitted.cluster
        resolved, script, partition = admitted.resolved, admitted.script, admitted.partition
        account, res = admitted.account, admitted.resolved.resources
        tasks = res.tasks
        amounts = amounts_of(res, admitted.partition)
        seconds = res.time_limit_minutes * 60
        spec = job_spec(request, resolved, public_id, cluster.name, account.slurm_account,
                        script=script)
        job = Job(
            public_id=public_id, member_id=member.id, project_id=project.id,
            user_id=principal.user_id, cluster=cluster.name, name=resolved.name,
            state=JobState.accepted, marker=spec.marker, created_at=utcnow(),
            task_count=tasks,
            partition=partition.name, resources=res.model_dump(), script=script,
            template_id=admitted.template_id, template_slug=request.template,
            template_version=admitted.template_version, parameters=request.parameters,
            environment=spec.environment, workdir=spec.workdir,
            stdout_path=spec.stdout, stderr_path=spec.stderr,
            billing=partition.billing.model_dump(),
            quote_msu=quotas.quote(partition.billing, amounts, seconds, tasks),
        )
        session.add(job)
        # the job, its events, hold and audit written by one flush (ids are not needed before)
        with session.no_autoflush:
            events = [first_event(session, job)]
            quotas.hold(session, quotas.JobRef(job_id=public_id, member_id=member.id,
                                               project_id=project.id, user_id=principal.user_id,
                                               cluster=cluster.name, partition=partition.name),
                        partition.billing, amounts, seconds, actor=principal, new_job=True,
                        tasks=tasks)
            record(session, actor=principal, action="job.submit", target_type="job",
                   target_id=public_id, member_id=member.id, context=context,
                   details={"cluster": cluster.name, "partition": partition.name,
                            "project_id": project.id, "quote_msu": job.quote_msu,
                            "template": request.template,
                            "template_version": admitted.template_version})
            if submitting:
                events.append(transition(session, job, JobState.submitting))
        session.flush()
        if idempotency_record is not None:
            idempotency.attach_job(session, idempotency_record, job.id)
        revision = session.scalars(_REVISION, {"job_id": job.id}).one()
        _loaded_as_inserted(job, revision)
        return Accepted(job.id, public_id, member.id, cluster,
                        identity_for(cluster.config, account), spec, job, tuple(events), revision)

    def _audit_refusal(self, session: Session, principal: Principal, request: JobCreate,
                       context: RequestContext, exc: DomainError) -> None:
        member_id = None
        with contextlib.suppress(DomainError):
            member_id = resolve_project(session, principal, request.project)[0].member_id
        record(session, actor=principal, action="job.submit", target_type="job",
               member_id=member_id, outcome=Outcome.denied, context=context,
               details={"reason": exc.detail, "code": exc.code})

    @staticmethod
    def _locked(session: Session, job_id: int) -> Job:
        return session.get_one(Job, job_id, with_for_update=True, populate_existing=True)

    def _as_accepted(self, session: Session, accepted: Accepted
                     ) -> tuple[Job, list[JobEvent] | None]:
        """The job, its row locked, and its events: taken from the accepting transaction when
        the row's revision shows that nothing changed the job or added an event since (no
        reading again); otherwise read again, events unknown."""
        revision, project_id, subscribed = session.execute(
            _REVISION_LOCKED, {"job_id": accepted.job_id}).one()
        if not subscribed:
            webhooks.no_job_subscriptions(session, project_id)
        if revision != accepted.revision:
            return self._locked(session, accepted.job_id), None
        return session.merge(accepted.job, load=False), list(accepted.events)

    @staticmethod
    def _submitted(session: Session, job: Job, scheduler_id: str
                   ) -> tuple[bool, bool, JobEvent | None]:
        """Store the cluster's id on the (locked) job: (stored, a cancel was asked meanwhile,
        the event of that change)."""
        if job.scheduler_id == scheduler_id:
            return True, False, None  # the tracker found it by its marker first
        if job.state not in (JobState.submitting, JobState.unknown):
            return False, False, None
        now = utcnow()
        job.scheduler_id = scheduler_id
        job.submitted_at = now
        event = transition(session, job, JobState.pending, at=now,
                           detail=f"slurm id {scheduler_id}")
        return True, job.cancel_requested_at is not None, event

    def _submit_failed(self, session: Session, job_id: int, message: str,
                       context: RequestContext) -> None:
        job = self._locked(session, job_id)
        if job.state != JobState.submitting:
            return
        now = utcnow()
        job.detail = message
        job.ended_at = now
        transition(session, job, JobState.submit_failed, at=now, detail=message)
        quotas.release(session, job.public_id, reason="submission failed", now=now)
        record(session, actor=SYSTEM, action="job.submit_failed", target_type="job",
               target_id=job.public_id, member_id=job.member_id, outcome=Outcome.failed,
               context=context, details={"reason": message})

    def _unknown(self, session: Session, job_id: int, message: str) -> Job:
        job = self._locked(session, job_id)
        if job.state == JobState.submitting:
            job.detail = message
            transition(session, job, JobState.unknown, detail=message)
        return job

    # --- idempotency -----------------------------------------------------------------------

    async def claim_key(self, user_id: int, key: str, fingerprint: str
                        ) -> idempotency.Claimed | idempotency.Replay:
        """Claim the key, or the response to replay (an orphaned key is answered with its job:
        202 and its state now, the response its request never sent)."""
        claimed = await self._db(lambda s: idempotency.claim(
            s, user_id=user_id, key=key, fingerprint=fingerprint, now=utcnow(),
            ttl=self.settings.idempotency_ttl,
            in_flight_timeout=self.settings.idempotency_in_flight_timeout))
        if not isinstance(claimed, idempotency.Orphaned):
            return claimed
        orphan = claimed

        def answer(session: Session) -> idempotency.Replay:
            body = self._detail(session, orphan.job_id).model_dump(mode="json")
            idempotency.complete(session, orphan.record_id, 202, body)
            return idempotency.Replay(202, body)
        return await self._db(answer)

    async def release_key(self, record_id: int) -> None:
        """Free the key of a request that executed nothing (see gateway.jobs.idempotency)."""
        await self._db(lambda s: idempotency.release(s, record_id))

    async def quote(self, principal: Principal, request: JobCreate) -> JobQuote:
        """What submitting `request` now would hold, and whether it would be accepted."""
        return await self._db(lambda s: quoting.quote(s, self.clusters, self.settings,
                                                      principal, request), write=False)

    # --- reading -----------------------------------------------------------------------------

    def _target(self, session: Session, principal: Principal, public_id: str, scope: Scope,
                *, for_update: bool = False) -> tuple[Job, Cluster, Identity]:
        job = repository.visible_job(session, principal, public_id, scope, for_update=for_update)
        cluster = self.clusters.get(job.cluster)
        identity = identity_for(cluster.config, cluster_account(session, job.member_id,
                                                                job.cluster))
        return job, cluster, identity

    def _output_target(self, session: Session, principal: Principal, public_id: str,
                       task: int | None) -> tuple[Job, Cluster, Identity, bool]:
        """The job whose output is read (an array's: one task's, which must be named), and
        whether that output is final."""
        job, cluster, identity = self._target(session, principal, public_id, Scope.jobs_read)
        _check_task(job, task)
        return job, cluster, identity, _output_ended(session, job, task)

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
            job = _job_by_public_id(session, public_id)
            return job, _output_ended(session, job, task)
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

    # --- cancellation --------------------------------------------------------------------

    async def cancel(self, principal: Principal, public_id: str,
                     context: RequestContext) -> CancelOutcome:
        """Idempotent. Not yet submitted: cancelled here, hold released. On the cluster: scancel,
        and the tracker records the end and the charge. Submission in doubt: the cancel is
        remembered and sent once the tracker has found the job."""
        job, cluster, identity = await self._db(
            lambda s: self._request_cancel(s, principal, public_id, context))
        if job.state.terminal:
            return CancelOutcome(200, await self._db(lambda s: self._detail(s, job.id)))
        if job.scheduler_id is not None and job.cancel_sent_at is None:
            await self._send_cancel(job.id, cluster, identity, job.scheduler_id, strict=True)
        return CancelOutcome(202, await self._db(lambda s: self._detail(s, job.id)))

    def _request_cancel(self, session: Session, principal: Principal, public_id: str,
                        context: RequestContext) -> tuple[Job, Cluster, Identity]:
        job, cluster, identity = self._target(session, principal, public_id, Scope.jobs_write,
                                              for_update=True)
        if job.state.terminal or job.cancel_requested_at is not None:
            return job, cluster, identity
        now = utcnow()
        job.cancel_requested_at = now
        if job.state == JobState.accepted:
            job.ended_at = now
            transition(session, job, JobState.cancelled, at=now,
                       detail="cancelled before it was submitted")
            quotas.release(session, job.public_id, reason="cancelled before submission",
                           actor=principal, now=now)
        record(session, actor=principal, action="job.cancel", target_type="job",
               target_id=job.public_id, member_id=job.member_id, context=context,
               details={"state": job.state.value})
        return job, cluster, identity

    async def _send_cancel(self, job_id: int, cluster: Cluster, identity: Identity,
                           scheduler_id: str, *, strict: bool) -> None:
        try:
            await cluster.scheduler.cancel(identity, scheduler_id)
        except SchedulerRejected:
            pass  # it has ended already: the tracker records how
        except SchedulerError as exc:
            if strict:
                raise self._cluster_error(cluster, exc) from exc
            return  # the tracker sends it again

        def sent(session: Session) -> None:
            self._locked(session, job_id).cancel_sent_at = utcnow()
        await self._db(sent)

    # --- files ---------------------------------------------------------------------------

    async def put_member_file(self, principal: Principal, member_slug: str, *,
                              cluster_name: str | None, path: str, data: bytes,
                              context: RequestContext) -> str:
        """Write the file; the name of the cluster it was written on."""
        def prepare(session: Session) -> tuple[Cluster, Identity]:
            member = get_member(session, principal, member_slug)
            require(principal, Scope.jobs_write, member.id)
            cluster = self.clusters.get(cluster_name, loc=("query", "cluster"))
            identity = identity_for(cluster.config,
                                    cluster_account(session, member.id, cluster.name))
            record(session, actor=principal, action="file.upload", target_type="file",
                   target_id=path[-64:], member_id=member.id, context=context,
                   details={"cluster": cluster.name, "path": path, "bytes": len(data)})
            return cluster, identity
        if len(data) > self.settings.file_max_bytes:
            raise FileTooLarge(self.settings.file_max_bytes)
        cluster, identity = await self._db(prepare)
        try:
            await cluster.scheduler.put_file(identity, path, data)
        except PathRefused as exc:
            raise JobInputInvalid.at(("path",), exc.message) from exc
        except SchedulerError as exc:
            raise self._cluster_error(cluster, exc) from exc
        return cluster.name

    async def get_member_file(self, principal: Principal, member_slug: str, *,
                              cluster_name: str | None, path: str) -> bytes:
        def prepare(session: Session) -> tuple[Cluster, Identity]:
            member = get_member(session, principal, member_slug)
            require(principal, Scope.jobs_read, member.id)
            cluster = self.clusters.get(cluster_name, loc=("query", "cluster"))
            return cluster, identity_for(cluster.config,
                                         cluster_account(session, member.id, cluster.name))
        cluster, identity = await self._db(prepare, write=False)
        return await self._get_file(cluster, identity, path)

    async def get_job_file(self, principal: Principal, public_id: str, path: str) -> bytes:
        """A file of the job's working directory (a checkpoint, a result)."""
        job, cluster, identity = await self._db(
            lambda s: self._target(s, principal, public_id, Scope.jobs_read), write=False)
        return await self._get_file(
            cluster, identity, posixpath.join(job.workdir, path),
            listed_by=f"GET /api/v1/jobs/{public_id}/files?path={quote_url(path)}")

    async def list_job_files(self, principal: Principal, public_id: str,
                             path: str) -> FileListing:
        """The files and directories of `path` in the job's working directory."""
        job, cluster, identity = await self._db(
            lambda s: self._target(s, principal, public_id, Scope.jobs_read), write=False)
        try:
            entries = await cluster.scheduler.list_files(identity,
                                                         posixpath.join(job.workdir, path))
        except NotADirectory as exc:
            raise _query_path_error(f"{path} is a file; download it with GET /api/v1/jobs/"
                                    f"{public_id}/files/{path}") from exc
        except PathRefused as exc:
            raise _query_path_error(exc.message) from exc
        except SchedulerRejected as exc:
            raise NotFound(f"cannot list {path or 'the working directory'}: {exc.message}"
                           ) from exc
        except SchedulerError as exc:
            raise self._cluster_error(cluster, exc) from exc
        return FileListing(path=path, entries=[FileEntryOut(**e.model_dump()) for e in entries])

    async def _get_file(self, cluster: Cluster, identity: Identity, path: str,
                        listed_by: str | None = None) -> bytes:
        """The file; a directory is refused with where to list it (`listed_by`: the route
        that lists it, with `path` relative to it)."""
        try:
            return await cluster.scheduler.get_file(identity, path, self.settings.file_max_bytes)
        except IsADirectory as exc:
            hint = f"; list it with {listed_by}" if listed_by else ""
            raise JobInputInvalid.at(("path",), f"is a directory{hint}") from exc
        except PathRefused as exc:
            raise JobInputInvalid.at(("path",), exc.message) from exc
        except SchedulerRejected as exc:
            raise NotFound(f"cannot read {path}: {exc.message}") from exc
        except SchedulerError as exc:
            raise self._cluster_error(cluster, exc) from exc

    def _cluster_error(self, cluster: Cluster, exc: SchedulerError) -> DomainError:
        if isinstance(exc, SchedulerTimeout):
            return ClusterTimeout(f"cluster {cluster.name} did not answer in time")
        return ClusterUnavailable(f"cluster {cluster.name} cannot be reached: {_describe(exc)}",
                                  retry_after=self.settings.retry_after_seconds)


def _job_by_public_id(session: Session, public_id: str) -> Job:
    return session.scalars(select(Job).where(Job.public_id == public_id)).one()


def _query_path_error(msg: str) -> JobInputInvalid:
    return JobInputInvalid([{"loc": ["query", "path"], "msg": msg, "type": "value_error"}])


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


def _output_ended(session: Session, job: Job, task: int | None) -> bool:
    """Whether the output being read is final: the job, or the array's task, has ended."""
    if job.state.terminal or task is None:
        return job.state.terminal
    state = session.scalars(select(JobTask.state).where(JobTask.job_id == job.id,
                                                        JobTask.task_id == task)).first()
    return state is not None and state.terminal


def decode_utf8(data: bytes, *, final: bool) -> tuple[str, int]:
    """The text of `data` and the bytes it used: a character cut by the end of the chunk is
    left for the next read (unless `final`); invalid bytes become U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data, final=final)
    held_back, _ = decoder.getstate()
    return text, len(data) - len(held_back)


def _describe(exc: SchedulerError) -> str:
    return f"{type(exc).__name__}: {exc.message}"




