"""Submission: a job accepted, held and sent to its cluster (or `waiting` for it), and the
Idempotency-Key and quote that go with it.

The order of a submission never changes: validate → quote → one transaction (the job
`accepted`, its quota hold, the audit event, and the job marked `submitting`) → commit → the
scheduler call with the job's marker, outside any transaction and off the event loop → the
outcome stored, the answer read in that same transaction. A crash anywhere leaves a row the
tracker settles by marker: no hold without a job, no Slurm job without a row, never a second
sbatch for one job. A submission that may wait for an unreachable cluster is accepted
`waiting` instead, and sent by the tracker (gateway/jobs/waiting.py).

Two ORM shortcuts serve the submit latency floor of bench/jobs.py (API submit at most 2x a raw
sbatch; bench/README.md): `_loaded_as_inserted` and `_as_accepted` answer from the job the
accepting transaction wrote instead of reading it again.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import anyio
from cachetools import LRUCache
from sqlalchemy import inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from consortium.audit import RequestContext, record
from consortium.authz import Principal, Scope, require
from consortium.base import utcnow
from consortium.errors import DomainError, PermissionDenied
from consortium.models import Outcome
from gateway.db import Database
from gateway.jobs import (
    details,
    directives,
    health,
    idempotency,
    outcomes,
    quoting,
    repository,
    waiting,
)
from gateway.jobs.actions import SYSTEM, JobActions, T, describe
from gateway.jobs.admission import (
    admit,
    amounts_of,
    over_job_cap,
    partition_errors,
    resolve_project,
)
from gateway.jobs.clusters import Cluster, Clusters, identity_for
from gateway.jobs.config import JobsSettings
from gateway.jobs.errors import (
    ClusterUnavailable,
    JobInputInvalid,
    SchedulerLimitReached,
    SubmissionRejected,
    TooManyActiveJobs,
)
from gateway.jobs.models import Job, JobEvent, JobState
from gateway.jobs.resolve import Resolved, resolve
from gateway.jobs.schemas import JobCreate, JobDetail, JobQuote
from gateway.jobs.transitions import first_event, transition
from gateway.jobs.views import job_detail
from quotas import service as quotas
from quotas.errors import QuotaExceeded
from schedulers.base import Staged, StagesSubmissions
from schedulers.errors import PathRefused, SchedulerError, SchedulerRejected, SchedulerUnavailable
from schedulers.models import Identity, JobSpec, Resources

ROUTES_CACHED = 4096  # (project, cluster) pairs whose next submission is staged

# Slurm's refusals that are limits of the account or QOS (a conflict with the current state)
_LIMIT_REFUSAL = re.compile(r"(QOS|Assoc)\w*Limit|job submit limit|Job violates accounting")

PUBLIC_ID_PATTERN = r"^[0-9a-f]{12}$"  # what new_public_id makes: a job's id in the paths


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


class Submissions(JobActions):
    """Submitting a job, with its Idempotency-Key, and quoting one."""

    def __init__(self, database: Database, clusters: Clusters, settings: JobsSettings) -> None:
        super().__init__(database, clusters, settings)
        # (project, cluster) as requested -> its route, to stage the next submission's sbatch
        # while its job is accepted (only a hint: the accepted job is compared with it)
        self._routes: LRUCache[tuple[int | str, str | None], _Route] = LRUCache(ROUTES_CACHED)

    async def submit(self, principal: Principal, request: JobCreate, context: RequestContext,
                     *, idempotency_record: int | None = None) -> Submission:
        cluster = self.clusters.get(request.cluster)
        cap = waiting.max_wait(request, self.settings)
        wait = await self._wait_instead(cluster, request, cap)
        if wait is not None:
            return await self._submit_waiting(principal, request, context, wait,
                                              idempotency_record)
        public_id = new_public_id()
        staged = self._stage(principal, request, public_id)
        try:
            return await self._submit(
                principal, request, context, public_id=public_id, staged=staged,
                idempotency_record=idempotency_record,
                wait_cap=cap if waiting.queues(request, cluster.config, None) else None)
        finally:
            if staged is not None:
                staged.discard()

    async def _wait_instead(self, cluster: Cluster, request: JobCreate,
                            cap: timedelta) -> waiting.Wait | None:
        """Why the submission waits instead of being tried (gateway.jobs.waiting), or None to
        try it. In a maintenance window it is not tried. When the cluster was found
        unreachable and a probe finds it still so, it waits, or is refused (503) within a
        second, before anything is written: not another wait for sbatch's own timeout
        (gateway.jobs.health)."""
        now = utcnow()
        window = cluster.config.maintenance_at(now)
        if window is not None:
            if not waiting.queues(request, cluster.config, window):
                raise waiting.in_maintenance(cluster.name, window, now)
            return waiting.for_maintenance(window, cap)
        down = await health.still_down(cluster.scheduler, self.settings.down_probe_seconds)
        if down is None:
            return None
        if waiting.queues(request, cluster.config, None):
            return waiting.for_outage(down, cap, now)
        raise ClusterUnavailable(
            f"cluster {cluster.name} cannot be reached ({down}); nothing was submitted "
            f"and nothing held", retry_after=self.settings.retry_after_seconds)

    async def _submit_waiting(self, principal: Principal, request: JobCreate,
                              context: RequestContext, wait: waiting.Wait,
                              idempotency_record: int | None) -> Submission:
        """Accepted with its hold and not tried: 202, the job `waiting`."""
        def accept(session: Session) -> JobDetail:
            accepted = self._accept(session, principal, request, context, idempotency_record,
                                    wait=wait)
            return self._answer(session, accepted.job, 202, idempotency_record,
                                events=accepted.events)
        return Submission(202, await self._accepting(principal, request, context, accept))

    async def _accepting(self, principal: Principal, request: JobCreate,
                         context: RequestContext, accept: Callable[[Session], T]) -> T:
        """`accept` in a transaction; a refusal of the caller is audited, then raised."""
        try:
            return await self._db(accept)
        except (PermissionDenied, QuotaExceeded, TooManyActiveJobs) as exc:
            refusal = exc
            await self._db(lambda s: self._audit_refusal(s, principal, request, context, refusal))
            raise

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
        scheduler = cluster.scheduler  # staging is an optional capability of a backend
        if resolved is None or not isinstance(scheduler, StagesSubmissions):
            return None
        partition = cluster.config.partition(resolved.resources.partition)
        if partition is None or partition_errors(partition, resolved.resources):
            return None
        # the script is sent after acceptance
        spec = job_spec(request, resolved, public_id, cluster.name, route.account,
                        script=request.script or "#!/bin/sh")
        try:
            return scheduler.stage(route.identity, spec)
        except SchedulerError:
            return None  # the transport is closing: the submission says so

    async def _submit(self, principal: Principal, request: JobCreate, context: RequestContext,
                      *, public_id: str, staged: Staged | None,
                      idempotency_record: int | None, wait_cap: timedelta | None
                      ) -> Submission:
        """`wait_cap`: the job waits that long at most if the cluster cannot be reached (None:
        it fails)."""
        accepted = await self._accepting(principal, request, context, lambda s: self._accept(
            s, principal, request, context, idempotency_record, public_id=public_id,
            submitting=True))
        self._routes[(request.project, request.cluster)] = _Route(
            accepted.member_id, accepted.identity, accepted.spec.account)
        job_id = accepted.job_id
        scheduler = accepted.cluster.scheduler
        try:
            submit = scheduler.submit if staged is None else staged.submit
            submitted = await submit(accepted.identity, accepted.spec)
        except SchedulerError as exc:
            health.failed(scheduler, exc)
            return await self._not_submitted(accepted, exc, context, idempotency_record,
                                             wait_cap)
        except BaseException:
            # anything else (a bug, a cancelled request): the script may have gone; the
            # tracker settles the job by its marker
            with anyio.CancelScope(shield=True):
                await self._db(lambda s: self._unknown(s, job_id, details.INTERRUPTED))
            raise
        health.reached(scheduler)

        def store(session: Session) -> tuple[bool, bool, JobDetail | None]:
            job, events = self._as_accepted(session, accepted)
            stored, cancel_wanted, event = outcomes.submitted(session, job,
                                                              submitted.scheduler_id)
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
                             idempotency_record: int | None,
                             wait_cap: timedelta | None) -> Submission:
        """The scheduler call failed: in doubt (the script may have gone) the job is `unknown`
        and 202; the cluster unreachable and the job may wait (`wait_cap`): `waiting` and 202;
        otherwise `submit_failed`, its hold released, and the refusal raised."""
        job_id, message = accepted.job_id, describe(exc)
        if exc.maybe_executed:
            def unknown(session: Session) -> JobDetail:
                job = self._unknown(session, job_id, message)
                return self._answer(session, job, 202, idempotency_record)
            return Submission(202, await self._db(unknown))
        if wait_cap is not None and isinstance(exc, SchedulerUnavailable):
            wait = waiting.for_outage(exc.message, wait_cap, utcnow())

            def wait_for_it(session: Session) -> JobDetail:
                job = self._locked(session, job_id)
                if job.state == JobState.submitting:
                    waiting.enter(session, job, wait)
                return self._answer(session, job, 202, idempotency_record)
            return Submission(202, await self._db(wait_for_it))
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
                public_id: str | None = None, submitting: bool = False,
                wait: waiting.Wait | None = None) -> Accepted:
        """The job `accepted` with its hold and audit event; `submitting` too when the caller
        sends it once this commits: from then on the script may be on its way, so a crash is
        settled by marker and a cancel asked meanwhile is sent once the cluster's id is
        stored. `waiting` instead with `wait`: not tried now (gateway.jobs.waiting)."""
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
            elif wait is not None:
                events.append(waiting.enter(session, job, wait))
        session.flush()
        if idempotency_record is not None:
            idempotency.attach_job(session, idempotency_record, job.id)
        revision = repository.revision_of(session, job.id)
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

    def _as_accepted(self, session: Session, accepted: Accepted
                     ) -> tuple[Job, list[JobEvent] | None]:
        """The job, its row locked, and its events: taken from the accepting transaction when
        the row's revision shows that nothing changed the job or added an event since (no
        reading again); otherwise read again, events unknown."""
        revision = repository.revision_of(session, accepted.job_id, lock=True)
        if revision != accepted.revision:
            return self._locked(session, accepted.job_id), None
        return session.merge(accepted.job, load=False), list(accepted.events)

    def _submit_failed(self, session: Session, job_id: int, message: str,
                       context: RequestContext) -> None:
        outcomes.submit_failed(session, self._locked(session, job_id), message, actor=SYSTEM,
                               context=context)

    def _unknown(self, session: Session, job_id: int, message: str) -> Job:
        job = self._locked(session, job_id)
        outcomes.unknown(session, job, message)
        return job

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
