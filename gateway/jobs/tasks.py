"""Job arrays in the tracker: what a cycle saw of each task, how the tasks make their job's
state, and each task's settlement.

A job array is one job to the gateway and one hold, and many jobs to Slurm. The tracker follows
every task (`123_4`) with the same squeue and sacct calls as the other jobs and keeps a row per
task (job_tasks). The job is `running` while any task runs, `pending` while any waits and none
runs, and ends when every task has ended: `completed` if all completed, else the first state of
END_ORDER that a task ended in. Each task is settled once, when it ends (its share of the hold
given back, its own use charged, refunded if the cluster killed it); the rest of the hold goes
back when the last task ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.audit import record
from gateway.footprint import settle as footprint
from gateway.jobs import details
from gateway.jobs.arrays import parse_array
from gateway.jobs.models import Job, JobState, JobTask
from gateway.jobs.transitions import transition
from quotas import service as quotas
from quotas.rates import Amounts
from schedulers.config import BillingWeights, ClusterConfig
from schedulers.models import AccountingRecord, JobStatus


def used_by(record: AccountingRecord) -> Amounts:
    """What a job (or task) is charged on: what Slurm's accounting says it was allocated."""
    return Amounts(gpus=record.alloc_gpus, cpus=record.alloc_cpus, mem_mb=record.alloc_mem_mb)


def requested(resources: Mapping[str, Any]) -> Amounts:
    """What a job (or task) asked for: charged when Slurm's accounting never recorded it."""
    return Amounts(gpus=resources["gpus"],
                   cpus=resources["ntasks"] * resources["cpus_per_task"],
                   mem_mb=resources["mem_mb"])

# The job's end when its tasks ended differently, the most telling first: the program's own
# failure, then the resources it ran out of, then the cluster's failure (refunded), then a
# cancel (the member's own act); `completed` only when every task completed.
END_ORDER = (JobState.failed, JobState.out_of_memory, JobState.timeout, JobState.node_fail,
             JobState.cancelled, JobState.completed)


def array_state(states: Iterable[JobState]) -> JobState:
    """The job's state from its tasks' (see the module's docstring)."""
    found = set(states)
    if JobState.running in found:
        return JobState.running
    if not found or JobState.pending in found:
        return JobState.pending
    return next((s for s in END_ORDER if s in found), JobState.failed)


def task_counts(states: Iterable[JobState]) -> dict[str, int]:
    """How many tasks are in each state (`{"pending": 3, "running": 1, "completed": 2}`)."""
    return dict(sorted(Counter(s.value for s in states).items()))


@dataclass(frozen=True)
class TaskSeen:
    """What a cycle saw of one task: its state now; for an end, Slurm's accounting record
    (None: an end accounting never recorded, charged for the time the gateway saw it run)."""

    state: JobState
    raw_state: str | None = None
    reason: str | None = None  # Slurm's, while it waits
    started: datetime | None = None
    record: AccountingRecord | None = None


def observe(job_id: int, scheduler_id: str, open_tasks: Iterable[int],
            statuses: Mapping[str, JobStatus], records: Mapping[str, AccountingRecord], *,
            now: datetime, missing_since: dict[tuple[int, int], datetime],
            grace: timedelta) -> dict[int, TaskSeen]:
    """What a cycle saw of the tasks not yet ended (`open_tasks`) of an array. A task
    absent from squeue and sacct, or ended in squeue with no accounting record yet (sacct's
    lag), is given `grace` before it counts as ended (`missing_since`, kept by the caller)."""
    seen: dict[int, TaskSeen] = {}
    for task in open_tasks:
        key = (job_id, task)
        status = statuses.get(f"{scheduler_id}_{task}")
        accounted = records.get(f"{scheduler_id}_{task}")
        if accounted is not None and accounted.state.terminal:
            missing_since.pop(key, None)
            seen[task] = TaskSeen(JobState(accounted.state.value), accounted.raw_state,
                                  record=accounted)
            continue
        current = status or accounted
        if current is not None and not current.state.terminal:
            missing_since.pop(key, None)
            state = JobState(current.state.value)
            seen[task] = TaskSeen(
                state, current.raw_state,
                reason=status.reason if status is not None and state is JobState.pending
                else None,
                started=accounted.start if accounted is not None else None)
            continue
        if now - missing_since.setdefault(key, now) < grace:
            continue
        missing_since.pop(key)
        seen[task] = (TaskSeen(JobState(status.state.value), status.raw_state)
                      if status is not None else TaskSeen(JobState.failed))
    return seen


def _reason(seen: Mapping[int, TaskSeen]) -> str | None:
    """Why the array waits, as Slurm says it of its first waiting task that says why."""
    return next((s.reason for s in seen.values() if s.reason), None)


def needs_update(state: JobState, reason: str | None, tasks: Mapping[int, JobState],
                 task_count: int, seen: Mapping[int, TaskSeen]) -> bool:
    """Whether what was seen changes the job or its tasks as the cycle read them (`state`,
    `reason`, `tasks`); the first sight of an array always does (its rows are made)."""
    if len(tasks) < task_count or any(tasks.get(t) != s.state for t, s in seen.items()):
        return True
    new_state = array_state(dict(tasks).values())
    new_reason = _reason(seen) if new_state is JobState.pending else None
    return new_state != state or new_reason != reason


def update(session: Session, job: Job, seen: Mapping[int, TaskSeen], *, now: datetime,
           actor: str, cluster: ClusterConfig) -> JobState:
    """Store what was seen of the (locked) job's tasks, settle those that ended (charge and
    footprint), and move the job to its tasks' state; at the first sight, every task gets its
    row."""
    array = job.array
    if array is None:
        raise ValueError(f"job {job.public_id} is not an array")
    rows = {row.task_id: row for row in session.scalars(
        select(JobTask).where(JobTask.job_id == job.id))}
    for task in parse_array(array).task_ids:
        if task not in rows:
            rows[task] = JobTask(job_id=job.id, task_id=task, state=JobState.pending,
                                 scheduler_id=f"{job.scheduler_id}_{task}")
            session.add(rows[task])
    ended: dict[int, quotas.TaskUse] = {}
    for task, what in seen.items():
        row = rows.get(task)
        if row is None or row.state.terminal:
            continue
        if what.state.terminal:
            ended[task] = use = _ended(job, row, what, now)
            footprint.settle_task(job, row, cluster, use.allocated, use.elapsed_seconds,
                                  record=what.record)
            continue
        if what.state is JobState.running and row.started_at is None:
            row.started_at = what.started or now
        row.state, row.raw_state = what.state, what.raw_state
    if ended:
        settled = quotas.settle_tasks(
            session, job.public_id, BillingWeights(**job.billing), list(ended.values()),
            share_msu=job.quote_msu // job.task_count, actor=actor, now=now)
        for task, (charge, refund) in settled.items():
            rows[task].charge_msu, rows[task].refund_msu = charge, refund
    state = array_state(row.state for row in rows.values())
    job.pending_reason = _reason(seen) if state is JobState.pending else None
    if state.terminal:
        return _finish(session, job, list(rows.values()), state, now=now, actor=actor)
    if state != job.state:
        if state is JobState.running and job.started_at is None:
            job.started_at = min((r.started_at for r in rows.values() if r.started_at),
                                 default=now)
        transition(session, job, state, at=now)
    return state


def _ended(job: Job, row: JobTask, seen: TaskSeen, now: datetime) -> quotas.TaskUse:
    """A task's end stored on its row, and what it used to be charged: as Slurm's accounting
    has it, else the requested resources for the time the gateway saw it run."""
    accounted = seen.record
    if accounted is not None:
        row.exit_code, row.signal = accounted.exit_code, accounted.signal
        row.started_at = accounted.start or row.started_at
        row.ended_at = accounted.end or now
        row.alloc_cpus, row.alloc_gpus = accounted.alloc_cpus, accounted.alloc_gpus
        row.alloc_mem_mb = accounted.alloc_mem_mb
        row.node_list = accounted.nodes or None
        used = used_by(accounted)
        elapsed = accounted.elapsed_seconds
    else:
        row.ended_at = now
        started = row.started_at
        elapsed = max(0, int((now - started).total_seconds())) if started else 0
        used = requested(job.resources)
    row.state, row.raw_state = seen.state, seen.raw_state
    row.elapsed_seconds = elapsed
    return quotas.TaskUse(row.task_id, used, elapsed, seen.state.value)


def _finish(session: Session, job: Job, rows: list[JobTask], state: JobState, *,
            now: datetime, actor: str) -> JobState:
    """Every task has ended: the rest of the hold released, the job's charge the sum of its
    tasks', its elapsed time theirs summed (what was charged), its exit code the highest."""
    ended_at = max((r.ended_at for r in rows if r.ended_at), default=now)
    settlement = quotas.close_hold(session, job.public_id, actor=actor, now=ended_at)
    job.started_at = min((r.started_at for r in rows if r.started_at), default=job.started_at)
    job.ended_at = ended_at
    job.elapsed_seconds = sum(r.elapsed_seconds or 0 for r in rows)
    job.exit_code = max((r.exit_code for r in rows if r.exit_code is not None), default=None)
    job.charge_msu, job.refund_msu = settlement.charge_msu, settlement.refund_msu
    footprint.total_of_tasks(job, rows)
    counts = task_counts(r.state for r in rows)
    if details.is_widened(job.detail):  # cancelled by the tracker: held wider than priced
        state = JobState.failed
    detail = details.tasks_ended(counts, job.detail)
    transition(session, job, state, at=ended_at, detail=detail)
    record(session, actor=actor, action="job.settle", target_type="job",
           target_id=job.public_id, member_id=job.member_id,
           details={"state": state.value, "elapsed_seconds": job.elapsed_seconds,
                    "charge_msu": settlement.charge_msu, "refund_msu": settlement.refund_msu,
                    "tasks": counts})
    return state
