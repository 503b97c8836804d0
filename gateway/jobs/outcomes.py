"""What a `submitting` job becomes once the scheduler's submit call has answered (or not):
the same for a submission made by the API and for a waiting job the tracker forwards.

Each takes the job's row locked and changes it only if it is still where the call left it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from consortium.audit import CLI_CONTEXT, RequestContext, record
from consortium.authz import Principal
from consortium.base import utcnow
from consortium.models import Outcome
from gateway.jobs import details
from gateway.jobs.models import Job, JobEvent, JobState
from gateway.jobs.transitions import transition
from quotas import service as quotas


def submitted(session: Session, job: Job, scheduler_id: str
              ) -> tuple[bool, bool, JobEvent | None]:
    """Store the cluster's id on the job: (stored, a cancel was asked meanwhile, the event of
    that change)."""
    if job.scheduler_id == scheduler_id:
        return True, False, None  # the tracker found it by its marker first
    if job.state not in (JobState.submitting, JobState.unknown):
        return False, False, None
    now = utcnow()
    job.scheduler_id = scheduler_id
    job.submitted_at = now
    event = transition(session, job, JobState.pending, at=now,
                       detail=details.SUBMITTED % {"id": scheduler_id})
    return True, job.cancel_requested_at is not None, event


def unknown(session: Session, job: Job, message: str) -> None:
    """The script may have gone: the tracker settles the job by its marker."""
    if job.state == JobState.submitting:
        job.detail = message
        transition(session, job, JobState.unknown, detail=message)


def submit_failed(session: Session, job: Job, message: str, *, actor: Principal | str,
                  context: RequestContext = CLI_CONTEXT) -> None:
    """Nothing reached the cluster and nothing will: the job ends, its hold released."""
    if job.state != JobState.submitting:
        return
    now = utcnow()
    job.detail = message
    job.ended_at = now
    transition(session, job, JobState.submit_failed, at=now, detail=message)
    quotas.release(session, job.public_id, reason="submission failed", now=now)
    record(session, actor=actor, action="job.submit_failed", target_type="job",
           target_id=job.public_id, member_id=job.member_id, outcome=Outcome.failed,
           context=context, details={"reason": message})
