"""Cancellation: a job not yet sent (or waiting) ends here, its hold released; one on the
cluster is scancelled, and the tracker records its end and charge; one in doubt is
cancelled once the tracker has found it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from consortium.audit import RequestContext, record
from consortium.authz import Principal, Scope
from consortium.base import utcnow
from gateway.jobs import details
from gateway.jobs.actions import JobActions
from gateway.jobs.clusters import Cluster
from gateway.jobs.models import Job, JobState
from gateway.jobs.schemas import JobDetail
from gateway.jobs.transitions import transition
from quotas import service as quotas
from schedulers.models import Identity


@dataclass(frozen=True)
class CancelOutcome:
    status: int  # 200: the job has ended (now or before); 202: the cluster was asked
    job: JobDetail


class Cancellation(JobActions):
    """Cancelling a job (gateway/jobs/cancel.py)."""

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
        if job.state in (JobState.accepted, JobState.waiting):  # nothing sent: no Slurm call
            job.ended_at = now
            transition(session, job, JobState.cancelled, at=now,
                       detail=details.CANCELLED_UNSENT)
            quotas.release(session, job.public_id, reason="cancelled before submission",
                           actor=principal, now=now)
        record(session, actor=principal, action="job.cancel", target_type="job",
               target_id=job.public_id, member_id=job.member_id, context=context,
               details={"state": job.state.value})
        return job, cluster, identity
