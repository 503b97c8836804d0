"""The tracker: follows every job of a cluster to its end and settles it.

One loop per cluster, in `hpcgw serve` or alone in `hpcgw tracker`, and at most one active per
cluster across replicas: a lease row (`tracker_leases`) renewed every cycle and taken over only
once expired; every write of a cycle first checks the lease is still held, and every change is
conditional on the state the cycle read, so even two trackers could not settle a job twice.

A cycle makes one `states()` call (squeue) for all the cluster's queued jobs and at most one
`accounting()` call (sacct) for those that left the queue or just started (for an array: one
of its tasks left the queue); jobs whose submission is in doubt are looked up by marker. Job
arrays are followed task by task (gateway/jobs/tasks.py). The same squeue says what Slurm holds
each job at: one held wider than priced is cancelled and ends failed (gateway/jobs/widening.py).
While the cluster cannot be reached the loop backs off exponentially, up to a cap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import anyio
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consortium.audit import record
from consortium.base import utcnow
from consortium.models import ClusterIdentity
from gateway import metrics
from gateway.db import Database
from gateway.footprint import settle as footprint
from gateway.holders import holder_name
from gateway.jobs import cluster_status, details, health, outcomes, repository, tasks, waiting
from gateway.jobs.admission import cluster_account
from gateway.jobs.arrays import parse_array
from gateway.jobs.clusters import Cluster, Clusters, identity_for
from gateway.jobs.config import JobsConfig, JobsSettings
from gateway.jobs.models import Job, JobState, JobTask, TrackerLease
from gateway.jobs.transitions import transition
from gateway.jobs.widening import excess, held_statuses
from gateway.logging import log
from quotas import service as quotas
from quotas.rates import Amounts
from schedulers.base import Scheduler
from schedulers.config import BillingWeights
from schedulers.errors import SchedulerError, SchedulerRejected, SchedulerUnavailable
from schedulers.models import AccountingRecord, FoundJob, Identity, JobSpec, JobStatus
from schedulers.models import JobState as ClusterState

T = TypeVar("T")
ACTOR = "tracker"
MAX_MARKER_LOOKUPS = 50  # per cycle: a flapping cluster must not make a cycle endless


# --- the lease ---------------------------------------------------------------------------

def acquire_lease(session: Session, cluster: str, holder: str, now: datetime,
                  ttl: timedelta) -> bool:
    """Take or renew the cluster's lease; False while another holder's lease is valid."""
    renewed = session.execute(
        update(TrackerLease)
        .where(TrackerLease.cluster == cluster,
               or_(TrackerLease.holder == holder, TrackerLease.expires_at <= now))
        .values(holder=holder, expires_at=now + ttl, renewed_at=now))
    if getattr(renewed, "rowcount", 0) == 1:
        return True
    if session.get(TrackerLease, cluster) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(TrackerLease(cluster=cluster, holder=holder, expires_at=now + ttl,
                                     renewed_at=now))
    except IntegrityError:  # another replica created it first
        return False
    return True


def holds_lease(session: Session, cluster: str, holder: str, now: datetime) -> bool:
    return session.scalars(select(TrackerLease.cluster).where(
        TrackerLease.cluster == cluster, TrackerLease.holder == holder,
        TrackerLease.expires_at > now)).first() is not None


def release_lease(session: Session, cluster: str, holder: str, now: datetime) -> None:
    """Let another replica take over at once (a clean stop)."""
    session.execute(update(TrackerLease)
                    .where(TrackerLease.cluster == cluster, TrackerLease.holder == holder)
                    .values(expires_at=now))


class LeaseLost(Exception):
    """Another tracker holds the cluster now: this one stops acting at once."""


# --- what a cycle reads ------------------------------------------------------------------

@dataclass(frozen=True)
class Tracked:
    """A job as the cycle read it (no ORM object crosses the await points)."""

    id: int
    public_id: str
    state: JobState
    scheduler_id: str | None
    marker: str
    partition: str
    resources: dict[str, Any]
    billing: dict[str, float]
    started_at: datetime | None
    updated_at: datetime
    cancel_requested: bool
    cancel_sent: bool
    pending_reason: str | None
    identity: Identity | None  # None: the member has no account there any more
    detail: str | None = None
    array: str | None = None
    task_count: int = 1
    tasks: Mapping[int, JobState] = field(default_factory=dict)  # an array's, as stored
    created_at: datetime | None = None
    wait_until: datetime | None = None  # a `waiting` job's deadline

    def open_tasks(self) -> list[int]:
        """An array's tasks not yet ended (all, before the tracker first saw them)."""
        if self.array is None:
            return []
        return [t for t in parse_array(self.array).task_ids
                if not self.tasks.get(t, JobState.pending).terminal]


@dataclass
class CycleReport:
    leader: bool
    tracked: int = 0
    states_calls: int = 0
    accounting_calls: int = 0
    marker_lookups: int = 0
    cancels_sent: int = 0
    forwarded: int = 0  # waiting jobs sent (gateway/jobs/waiting.py)
    failures: int = 0  # jobs whose update failed (retried next cycle)
    changes: list[tuple[str, JobState, JobState]] = field(default_factory=list)


class ClusterTracker:
    def __init__(self, database: Database, cluster: Cluster, settings: JobsSettings, *,
                 holder: str | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.database = database
        self.cluster = cluster
        self.settings = settings
        self.holder = holder or holder_name()
        self.clock = clock
        self._missing_since: dict[int, datetime] = {}  # queued jobs absent from squeue and sacct
        self._tasks_missing_since: dict[tuple[int, int], datetime] = {}  # the same, array tasks
        self._jobs_wait = False  # jobs wait for the cluster: no backoff, they go once it answers

    @property
    def scheduler(self) -> Scheduler:
        return self.cluster.scheduler

    async def _db(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        def run() -> T:
            with self.database.transaction(write=write) as session:
                return fn(session)
        return await anyio.to_thread.run_sync(run)

    def _fence(self, session: Session) -> None:
        if not holds_lease(session, self.cluster.name, self.holder, self.clock()):
            raise LeaseLost(self.cluster.name)

    # --- the loop -----------------------------------------------------------------------

    async def run(self, stop: anyio.Event) -> None:
        """Cycle until `stop` is set; then hand the lease back."""
        failures = 0
        interval = self.settings.tracker_interval_seconds
        try:
            while not stop.is_set():
                try:
                    with metrics.tracker_cycle(self.cluster.name):
                        await self.cycle()
                    failures = 0
                except (SchedulerError, LeaseLost) as exc:
                    failures += 1
                    log.warning("tracker cycle failed", cluster=self.cluster.name,
                                error=f"{type(exc).__name__}: {exc}", failures=failures)
                except Exception:  # noqa: BLE001 - a bad cycle must not end the tracking
                    failures += 1
                    log.exception("tracker cycle failed", cluster=self.cluster.name,
                                  failures=failures)
                delay = backoff(interval, failures, interval if self._jobs_wait
                                else self.settings.tracker_max_backoff_seconds)
                with anyio.move_on_after(delay):
                    await stop.wait()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._db(lambda s: release_lease(s, self.cluster.name, self.holder,
                                                           self.clock()))
                except Exception:  # noqa: BLE001 - the lease expires by itself anyway
                    log.exception("could not release the tracker lease",
                                  cluster=self.cluster.name)

    async def cycle(self) -> CycleReport:
        """One pass over the cluster's jobs; does nothing unless this tracker holds the lease."""
        ttl = timedelta(seconds=self.settings.tracker_lease_seconds)
        name = self.cluster.name
        if not await self._db(lambda s: acquire_lease(s, name, self.holder, self.clock(), ttl)):
            return CycleReport(leader=False)
        await cluster_status.observe(self.database, self.cluster, self.settings)
        jobs = await self._db(self._load, write=False)
        report = CycleReport(leader=True, tracked=len(jobs))
        self._jobs_wait = any(j.state == JobState.waiting for j in jobs)
        try:
            # first: a cluster still down fails the steps that read it, not the waits' ends
            await self._forward_waiting([j for j in jobs if j.state == JobState.waiting],
                                        report)
            await self._follow_queued([j for j in jobs if j.state in (JobState.pending,
                                                                      JobState.running)], report)
            await self._settle_unsettled(
                [j for j in jobs if j.state in (JobState.accepted, JobState.submitting,
                                                 JobState.unknown)], report)
            await self._send_cancels(jobs, report)
        except SchedulerError as exc:
            health.failed(self.scheduler, exc)  # submissions meanwhile are refused at once
            raise
        return report

    def _load(self, session: Session) -> list[Tracked]:
        jobs = repository.tracked_jobs(session, self.cluster.name)
        member_ids = sorted({j.member_id for j in jobs})
        accounts = {a.member_id: a for a in session.scalars(select(ClusterIdentity).where(
            ClusterIdentity.cluster == self.cluster.name,
            ClusterIdentity.member_id.in_(member_ids)))} if member_ids else {}
        identities = {m: identity_for(self.cluster.config, a) for m, a in accounts.items()}
        arrays = [j.id for j in jobs if j.array is not None]
        stored: dict[int, dict[int, JobState]] = {job_id: {} for job_id in arrays}
        if arrays:
            for job_id, task_id, state in session.execute(
                    select(JobTask.job_id, JobTask.task_id, JobTask.state)
                    .where(JobTask.job_id.in_(arrays))):
                stored[job_id][task_id] = state
        return [Tracked(
            id=j.id, public_id=j.public_id, state=j.state, scheduler_id=j.scheduler_id,
            marker=j.marker, partition=j.partition, resources=j.resources, billing=j.billing,
            started_at=j.started_at, updated_at=j.updated_at,
            cancel_requested=j.cancel_requested_at is not None,
            cancel_sent=j.cancel_sent_at is not None, pending_reason=j.pending_reason,
            identity=identities.get(j.member_id), detail=j.detail, array=j.array,
            task_count=j.task_count,
            tasks=stored.get(j.id, {}), created_at=j.created_at, wait_until=j.wait_until,
        ) for j in jobs]

    # --- queued jobs: one squeue, at most one sacct -----------------------------------------

    async def _follow_queued(self, jobs: list[Tracked], report: CycleReport) -> None:
        queued = [(j, j.scheduler_id) for j in jobs if j.scheduler_id is not None]
        if not queued:
            self._missing_since.clear()
            return
        statuses = await self.scheduler.states([sid for _, sid in queued])
        report.states_calls += 1
        health.reached(self.scheduler)
        for job, sid in queued:
            await self._check_widening(job, sid, statuses, report)
        wanted = [sid for job, sid in queued if _needs_accounting(job, sid, statuses)]
        records: Mapping[str, AccountingRecord] = {}
        if wanted:
            records = await self.scheduler.accounting(wanted)
            report.accounting_calls += 1
        now = self.clock()
        for job, sid in queued:
            if job.array is not None:
                await self._observe_array(job, sid, statuses, records, now=now, report=report)
            else:
                await self._observe(job, statuses.get(sid), records.get(sid), now, report)
        known = {job.id for job, _ in queued}
        for job_id in list(self._missing_since):
            if job_id not in known:
                del self._missing_since[job_id]
        for key in list(self._tasks_missing_since):
            if key[0] not in known:
                del self._tasks_missing_since[key]

    async def _check_widening(self, job: Tracked, sid: str, statuses: Mapping[str, JobStatus],
                              report: CycleReport) -> None:
        """Cancel a job Slurm holds wider than priced and record why, once; the cancel is sent
        again each cycle while Slurm still lists it live (a cancel lost on the way)."""
        held = held_statuses(sid, job.array, statuses)
        partition = self.cluster.config.partition(job.partition)
        found = excess(job.resources, sid, held,
                       cpus_per_core=partition.cpus_per_core if partition else 1)
        if not found or job.identity is None:
            return
        recorded = details.is_widened(job.detail)
        if recorded and all(s.state.terminal for s in held):
            return
        try:
            await self.scheduler.cancel(job.identity, sid)
        except SchedulerRejected:
            pass  # it has ended already
        except SchedulerError as exc:
            log.warning("could not cancel a widened job; retried next cycle",
                        job=job.public_id, cluster=self.cluster.name, error=str(exc))
            return
        report.cancels_sent += 1
        if recorded:
            return
        detail = details.widened(found)
        log.warning("job held wider than priced: cancelled", job=job.public_id,
                    cluster=self.cluster.name, scheduler_id=sid, excess=found)

        def mark(session: Session) -> None:
            self._fence(session)
            current = session.get_one(Job, job.id, with_for_update=True)
            current.detail = detail
            record(session, actor=ACTOR, action="job.widened_cancel", target_type="job",
                   target_id=job.public_id, member_id=current.member_id,
                   details={"scheduler_id": sid, "excess": found})
        await self._db(mark)

    async def _observe_array(self, job: Tracked, sid: str, statuses: Mapping[str, JobStatus],
                             records: Mapping[str, AccountingRecord], *, now: datetime,
                             report: CycleReport) -> None:
        seen = tasks.observe(job.id, sid, job.open_tasks(), statuses, records,
                             now=now, missing_since=self._tasks_missing_since,
                             grace=timedelta(seconds=self.settings.vanished_grace_seconds))
        if tasks.needs_update(job.state, job.pending_reason, job.tasks, job.task_count, seen):
            await self._apply(job, report, lambda s: tasks.update(
                s, s.get_one(Job, job.id), seen, now=now, actor=ACTOR,
                cluster=self.cluster.config))

    async def _observe(self, job: Tracked, status: JobStatus | None,
                       accounting: AccountingRecord | None, now: datetime,
                       report: CycleReport) -> None:
        if accounting is not None and accounting.state.terminal:
            self._missing_since.pop(job.id, None)
            await self._apply(job, report, lambda s: self._finish(s, job, accounting, now))
            return
        current = status or accounting
        if current is not None and not current.state.terminal:
            self._missing_since.pop(job.id, None)
            state = JobState(current.state.value)
            reason = status.reason if status is not None and state == JobState.pending else None
            if state != job.state or reason != job.pending_reason:
                started = accounting.start if accounting is not None else None
                await self._apply(job, report,
                                  lambda s: self._progress(s, job, state, reason=reason,
                                                          started=started, now=now))
            return
        # ended in squeue but not in sacct yet (its lag), or absent from both
        since = self._missing_since.setdefault(job.id, now)
        if now - since < timedelta(seconds=self.settings.vanished_grace_seconds):
            return
        self._missing_since.pop(job.id, None)
        ended = JobState(status.state.value) if status is not None else JobState.failed
        detail = (details.UNACCOUNTED % {"state": status.raw_state} if status is not None
                  else details.VANISHED)
        await self._apply(job, report, lambda s: self._finish_unaccounted(s, job, ended, detail,
                                                                          now))

    async def _apply(self, job: Tracked, report: CycleReport,
                     change: Callable[[Session], JobState | None]) -> None:
        """Run `change` on the job if it is still as read, under the lease. A job whose change
        fails is retried next cycle; the other jobs of the cycle go on."""
        def run(session: Session) -> JobState | None:
            self._fence(session)
            current = session.get_one(Job, job.id, with_for_update=True,
                                      populate_existing=True)
            if current.state != job.state:
                return None  # changed meanwhile (a cancel before submission, another path)
            return change(session)
        try:
            new_state = await self._db(run)
        except LeaseLost:
            raise
        except Exception:  # noqa: BLE001 - one job's failure must not stop the others
            report.failures += 1
            log.exception("job update failed; retried next cycle", job=job.public_id,
                          cluster=self.cluster.name)
            return
        if new_state is not None and new_state != job.state:
            report.changes.append((job.public_id, job.state, new_state))
            log.info("job state", job=job.public_id, cluster=self.cluster.name,
                     from_state=job.state.value, to_state=new_state.value)

    def _progress(self, session: Session, job: Tracked, state: JobState, *,
                  reason: str | None, started: datetime | None, now: datetime) -> JobState:
        current = session.get_one(Job, job.id)
        current.pending_reason = reason
        if state != current.state:
            if state == JobState.running and current.started_at is None:
                current.started_at = started or now
            transition(session, current, state, at=now)
        return state

    def _finish(self, session: Session, job: Tracked, accounting: AccountingRecord,
                now: datetime) -> JobState:
        """The job's end as Slurm's accounting has it: what it used, its charge."""
        current = session.get_one(Job, job.id)
        current.raw_state = accounting.raw_state
        current.exit_code = accounting.exit_code
        current.signal = accounting.signal
        current.started_at = accounting.start or current.started_at
        current.ended_at = accounting.end or now
        current.alloc_nodes = accounting.node_count or None
        current.alloc_cpus = accounting.alloc_cpus
        current.alloc_gpus = accounting.alloc_gpus
        current.alloc_mem_mb = accounting.alloc_mem_mb
        current.node_list = accounting.nodes or None
        current.energy_joules_measured = accounting.consumed_energy_joules
        used = tasks.used_by(accounting)
        return self._settle(session, job, current, JobState(accounting.state.value), used=used,
                            elapsed=accounting.elapsed_seconds, detail=None)

    def _finish_unaccounted(self, session: Session, job: Tracked, state: JobState, detail: str,
                            now: datetime) -> JobState:
        """An end Slurm's accounting never recorded: the requested resources for the time
        the gateway saw the job run."""
        current = session.get_one(Job, job.id)
        current.ended_at = now
        if not details.is_widened(current.detail):
            current.detail = detail
        started = current.started_at
        elapsed = max(0, int((now - started).total_seconds())) if started else 0
        used = tasks.requested(job.resources)
        return self._settle(session, job, current, state, used=used, elapsed=elapsed,
                            detail=detail)

    def _settle(self, session: Session, job: Tracked, current: Job, state: JobState, *,
                used: Amounts, elapsed: int, detail: str | None) -> JobState:
        """Charge rate(used) x elapsed with the weights of the quote, release the hold (refund
        a node failure), and record the end; a job cancelled for being held wider than priced
        ends failed, whatever Slurm says."""
        if details.is_widened(current.detail):
            state, detail = JobState.failed, current.detail
        ended_at = current.ended_at or self.clock()
        current.elapsed_seconds = elapsed
        current.pending_reason = None
        settlement = quotas.settle(session, job.public_id, BillingWeights(**job.billing), used,
                                   elapsed, state=state.value, actor=ACTOR, now=ended_at)
        current.charge_msu = settlement.charge_msu
        current.refund_msu = settlement.refund_msu
        footprint.settle_job(current, self.cluster.config, used, elapsed)
        transition(session, current, state, at=ended_at, detail=detail)
        record(session, actor=ACTOR, action="job.settle", target_type="job",
               target_id=job.public_id, member_id=current.member_id,
               details={"state": state.value, "elapsed_seconds": elapsed,
                        "charge_msu": settlement.charge_msu,
                        "refund_msu": settlement.refund_msu})
        return state

    # --- submissions in doubt: by marker ---------------------------------------------------

    async def _settle_unsettled(self, jobs: list[Tracked], report: CycleReport) -> None:
        now = self.clock()
        for job in jobs:
            await self._settle_one(job, now, report)

    async def _settle_one(self, job: Tracked, now: datetime, report: CycleReport) -> None:
        quiet = now - job.updated_at
        if job.state != JobState.unknown and quiet < timedelta(
                seconds=self.settings.submit_grace_seconds):
            return  # its submitter may still be at work
        if job.state == JobState.accepted:
            # the submitter stopped before `submitting`: nothing was ever sent
            await self._apply(job, report, lambda s: self._give_up(
                s, job, details.NEVER_SENT, now))
            return
        if job.identity is None or report.marker_lookups >= MAX_MARKER_LOOKUPS:
            return
        found = await self.scheduler.find_by_marker(job.identity, job.marker)
        report.marker_lookups += 1
        if found is not None:
            await self._apply(job, report, lambda s: self._found(s, job, found, now))
        elif quiet >= timedelta(seconds=self.settings.marker_grace_seconds):
            await self._apply(job, report, lambda s: self._give_up(
                s, job, details.NEVER_RECEIVED, now))

    def _found(self, session: Session, job: Tracked, found: FoundJob,
               now: datetime) -> JobState:
        current = session.get_one(Job, job.id)
        current.scheduler_id = found.scheduler_id
        # Slurm's own submit time: the discovery may come long after (a gateway that was down)
        current.submitted_at = current.submitted_at or found.submit or now
        transition(session, current, JobState.pending, at=now,
                   detail=details.FOUND_BY_MARKER % {"id": found.scheduler_id})
        return JobState.pending

    def _give_up(self, session: Session, job: Tracked, reason: str, now: datetime) -> JobState:
        current = session.get_one(Job, job.id)
        state = JobState.cancelled if job.cancel_requested else JobState.submit_failed
        current.detail = reason
        current.ended_at = now
        transition(session, current, state, at=now, detail=reason)
        quotas.release(session, job.public_id, actor=ACTOR, reason=reason, now=now)
        record(session, actor=ACTOR, action="job.submit_failed", target_type="job",
               target_id=job.public_id, member_id=current.member_id,
               details={"reason": reason, "state": state.value})
        return state

    # --- jobs waiting for the cluster (gateway/jobs/waiting.py) -----------------------------------

    async def _forward_waiting(self, jobs: list[Tracked], report: CycleReport) -> None:
        """End the waits that are over (cap reached, cancel asked, no account left); then, out
        of any maintenance window and if the cluster answers, send the others oldest first,
        until one finds the cluster unreachable again."""
        if not jobs:
            return
        now = self.clock()
        sendable = []
        for job in jobs:
            reason = _wait_over(job, now)
            if reason is None:
                sendable.append(job)
            else:
                await self._apply(job, report,
                                  partial(self._give_up, job=job, reason=reason, now=now))
        if not sendable or self.cluster.config.maintenance_at(now) is not None:
            return
        if await health.probe(self.scheduler) is not None:
            return
        for job in sorted(sendable, key=lambda j: (j.created_at or now, j.id)):
            if not await self._forward(job, report):
                return

    async def _forward(self, job: Tracked, report: CycleReport) -> bool:
        """Send one waiting job, exactly once; False when the cluster could not be reached."""
        spec = await self._db(lambda s: self._claim(s, job))
        if spec is None or job.identity is None:
            return True  # cancelled meanwhile, or forwarded by another tracker
        try:
            submitted = await self.scheduler.submit(job.identity, spec)
        except SchedulerError as exc:
            health.failed(self.scheduler, exc)
            log.warning("a waiting job could not be sent", job=job.public_id,
                        cluster=self.cluster.name, error=f"{type(exc).__name__}: {exc}")
            failure = exc
            await self._db(lambda s: self._not_forwarded(s, job, failure))
            return failure.maybe_executed or not isinstance(failure, SchedulerUnavailable)
        except BaseException:
            # the script may have gone: settled by marker, never sent again
            with anyio.CancelScope(shield=True):
                await self._db(lambda s: outcomes.unknown(
                    s, self._locked(s, job), "forwarding interrupted"))
            raise
        health.reached(self.scheduler)
        stored, _, _ = await self._db(lambda s: outcomes.submitted(
            s, self._locked(s, job), submitted.scheduler_id))
        if not stored:  # given up meanwhile: the cluster must not keep a job without a live row
            with contextlib.suppress(SchedulerError):
                await self.scheduler.cancel(job.identity, submitted.scheduler_id)
            return True
        report.forwarded += 1
        report.changes.append((job.public_id, JobState.waiting, JobState.pending))
        log.info("waiting job forwarded", job=job.public_id, cluster=self.cluster.name,
                 scheduler_id=submitted.scheduler_id)
        return True

    def _claim(self, session: Session, job: Tracked) -> JobSpec | None:
        """waiting → submitting, committed before the sbatch: what to send, or None when the
        job no longer waits."""
        self._fence(session)
        current = self._locked(session, job)
        if current.state != JobState.waiting:
            return None
        account = cluster_account(session, current.member_id, self.cluster.name)
        waiting.start_sending(session, current)
        return waiting.spec_of(current, account.slurm_account)

    def _not_forwarded(self, session: Session, job: Tracked, exc: SchedulerError) -> None:
        current = self._locked(session, job)
        message = f"{type(exc).__name__}: {exc.message}"
        if exc.maybe_executed:
            outcomes.unknown(session, current, message)
        elif isinstance(exc, SchedulerUnavailable):
            waiting.wait_again(session, current,
                               details.UNAVAILABLE % {"reason": exc.message})
        else:
            outcomes.submit_failed(session, current, exc.message, actor=ACTOR)

    @staticmethod
    def _locked(session: Session, job: Tracked) -> Job:
        return session.get_one(Job, job.id, with_for_update=True, populate_existing=True)

    # --- cancels asked while the submission was in doubt ---------------------------------------

    async def _send_cancels(self, jobs: Sequence[Tracked], report: CycleReport) -> None:
        for job in jobs:
            if job.cancel_requested and not job.cancel_sent and job.identity is not None:
                await self._send_cancel(job, job.identity, report)

    async def _send_cancel(self, job: Tracked, identity: Identity, report: CycleReport) -> None:
        def current_id(session: Session) -> str | None:
            # read again: the job may have been found by its marker in this very cycle
            return session.get_one(Job, job.id).scheduler_id

        scheduler_id = job.scheduler_id or await self._db(current_id, write=False)
        if scheduler_id is None:
            return
        with contextlib.suppress(SchedulerRejected):  # it has ended already
            await self.scheduler.cancel(identity, scheduler_id)
        report.cancels_sent += 1

        def sent(session: Session) -> None:
            self._fence(session)
            session.get_one(Job, job.id).cancel_sent_at = self.clock()
        await self._db(sent)


def _wait_over(job: Tracked, now: datetime) -> str | None:
    """Why a waiting job stops waiting unsent, if it does."""
    if job.cancel_requested:  # asked while its sbatch found the cluster down
        return "cancelled while waiting for the cluster"
    if job.identity is None:
        return "the member has no account on the cluster any more"
    if job.wait_until is not None and now >= job.wait_until:
        return (f"waited for the cluster until {job.wait_until:%Y-%m-%d %H:%M} UTC, the most "
                f"it could (max_wait_minutes): {job.detail}")
    return None


def _needs_accounting(job: Tracked, sid: str, statuses: Mapping[str, JobStatus]) -> bool:
    """Whether sacct must be read for the job: it left the queue or ended there, or started
    (its start time); for an array, one of its tasks not yet ended left the queue or ended."""
    if job.array is not None:
        return any((status := statuses.get(f"{sid}_{task}")) is None or status.state.terminal
                   for task in job.open_tasks())
    status = statuses.get(sid)
    return (status is None or status.state.terminal
            or (status.state is ClusterState.running and job.started_at is None))


def backoff(interval: float, failures: int, cap: float) -> float:
    """The pause before the next cycle: the interval, doubled per failure in a row, capped."""
    return float(min(cap, interval * 2 ** min(failures, 30)))


async def run_trackers(settings: JobsConfig, database: Database,
                       schedulers: Mapping[str, Scheduler], stop: anyio.Event) -> None:
    """One tracker per configured cluster until `stop` is set (the app's lifespan when
    `jobs.tracker_in_serve`, or `hpcgw tracker`)."""
    holder = holder_name()
    clusters = Clusters(settings.clusters, schedulers)
    async with anyio.create_task_group() as group:
        for cluster in clusters:
            tracker = ClusterTracker(database, cluster, settings.jobs, holder=holder)
            group.start_soon(tracker.run, stop, name=f"tracker-{cluster.name}")
