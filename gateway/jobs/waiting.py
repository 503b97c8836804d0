"""Submissions that wait for their cluster instead of failing (issue 15, point 3).

A submission that finds its cluster unreachable fails (503, nothing held), unless it waits:
`when_unavailable: queue` in the request, else the cluster's `when_unavailable`, else `queue`
during a declared maintenance window (schedulers.config.MaintenanceWindow). A waiting job is
accepted (202) with its hold, in state `waiting`, the reason in `detail` and its deadline in
`wait_until`. During a maintenance window nothing is tried against Slurm at all.

The tracker holding the cluster's lease forwards waiting jobs once the cluster answers again,
oldest first (created_at, id), one sbatch at a time. Each is moved waiting → submitting in a
committed, fenced transaction before its sbatch: a second forwarder (a replica whose lease
expired, a restarted gateway) no longer finds it waiting, and an answer in doubt leaves it
`unknown`, settled by marker like any submission: never a second sbatch. A job still waiting
at `wait_until` fails with its hold released; a cancel ends it at once, with no Slurm call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from consortium.texts import Sentence
from gateway.jobs import details, directives
from gateway.jobs.config import JobsSettings
from gateway.jobs.errors import ClusterUnavailable, JobInputInvalid
from gateway.jobs.models import Job, JobEvent, JobState
from gateway.jobs.schemas import JobCreate
from gateway.jobs.transitions import transition
from schedulers.config import ClusterConfig, MaintenanceWindow
from schedulers.models import JobSpec, Resources


@dataclass(frozen=True)
class Wait:
    """Why a job waits, and until when at most."""

    reason: str
    until: datetime


def queues(request: JobCreate, config: ClusterConfig, window: MaintenanceWindow | None) -> bool:
    """Whether the submission waits rather than fails when the cluster cannot be tried."""
    if request.when_unavailable is not None:
        return request.when_unavailable == "queue"
    return window is not None or config.when_unavailable == "queue"


def max_wait(request: JobCreate, settings: JobsSettings) -> timedelta:
    """The request's cap on its wait (422 beyond the gateway's)."""
    if request.max_wait_minutes is not None and (
            request.max_wait_minutes > settings.max_wait_minutes):
        raise JobInputInvalid.at(("max_wait_minutes",), Sentence(
            "at most %(most)s on this gateway", most=settings.max_wait_minutes))
    return timedelta(minutes=request.max_wait_minutes or settings.max_wait_minutes)


def for_maintenance(window: MaintenanceWindow, cap: timedelta) -> Wait:
    # the cap counts from the window's end: a job sent on the eve of a maintenance day
    # waits for it to be over, however long it was declared
    return Wait(details.MAINTENANCE % {"end": _utc(window.end), "reason": window.reason},
                window.end + cap)


def for_outage(detail: str, cap: timedelta, now: datetime) -> Wait:
    return Wait(details.UNAVAILABLE % {"reason": detail}, now + cap)


def in_maintenance(cluster: str, window: MaintenanceWindow, now: datetime) -> ClusterUnavailable:
    """The refusal of a submission that asked not to wait, during a maintenance window."""
    return ClusterUnavailable(
        f"cluster {cluster} is in a maintenance window until {_utc(window.end)} "
        f"({window.reason}); nothing was submitted and nothing held. Send it with "
        f"`when_unavailable: queue` to have it wait for the end of the window",
        retry_after=max(1, math.ceil((window.end - now).total_seconds())))


def enter(session: Session, job: Job, wait: Wait) -> JobEvent:
    """The job (accepted, or submitting with nothing sent) waits."""
    job.detail = wait.reason
    job.wait_until = wait.until
    return transition(session, job, JobState.waiting, detail=wait.reason)


def start_sending(session: Session, job: Job) -> JobEvent:
    """waiting → submitting, to be committed before the sbatch (see the module's doc)."""
    job.detail = None
    return transition(session, job, JobState.submitting,
                      detail=details.FORWARDED)


def wait_again(session: Session, job: Job, reason: str) -> None:
    """A forwarded job whose sbatch could not reach the cluster (nothing ran) waits again,
    its deadline and place unchanged."""
    if job.state == JobState.submitting:
        job.detail = reason
        transition(session, job, JobState.waiting, detail=reason)


def spec_of(job: Job, account: str | None) -> JobSpec:
    """What a waiting job is sent: as service.job_spec made it when it was accepted."""
    return JobSpec(marker=job.marker, name=job.name, script=directives.neutralised(job.script),
                   account=account, resources=Resources(**job.resources),
                   environment=dict(job.environment), workdir=job.workdir,
                   stdout=job.stdout_path, stderr=job.stderr_path)


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
