"""What every job use case shares (submission, cancellation, streams, files; JobService
gathers them): its own short transactions in worker threads, the job a caller targets, the
cancel sent to the cluster, and the cluster's failures as the caller's refusals.

The use cases own their transactions (each a short `database.transaction()` in a worker
thread) because they must commit between steps; the functions they call only add and flush.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from sqlalchemy.orm import Session

from consortium.authz import Principal, Scope
from consortium.base import utcnow
from consortium.errors import DomainError
from gateway.db import Database
from gateway.jobs import repository
from gateway.jobs.admission import cluster_account
from gateway.jobs.clusters import Cluster, Clusters, identity_for
from gateway.jobs.config import JobsSettings
from gateway.jobs.errors import ClusterTimeout, ClusterUnavailable
from gateway.jobs.models import Job
from gateway.jobs.schemas import JobDetail
from gateway.jobs.views import job_detail
from schedulers.errors import SchedulerError, SchedulerRejected, SchedulerTimeout
from schedulers.models import Identity

T = TypeVar("T")
SYSTEM = "system"


class JobActions:
    """The base of the use cases, which JobService gathers into one object."""

    def __init__(self, database: Database, clusters: Clusters, settings: JobsSettings) -> None:
        self.database = database
        self.clusters = clusters
        self.settings = settings

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

    @staticmethod
    def _locked(session: Session, job_id: int) -> Job:
        return session.get_one(Job, job_id, with_for_update=True, populate_existing=True)

    def _target(self, session: Session, principal: Principal, public_id: str, scope: Scope,
                *, for_update: bool = False) -> tuple[Job, Cluster, Identity]:
        job = repository.visible_job(session, principal, public_id, scope, for_update=for_update)
        cluster = self.clusters.get(job.cluster)
        identity = identity_for(cluster.config, cluster_account(session, job.member_id,
                                                                job.cluster))
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

    def _cluster_error(self, cluster: Cluster, exc: SchedulerError) -> DomainError:
        if isinstance(exc, SchedulerTimeout):
            return ClusterTimeout(f"cluster {cluster.name} did not answer in time")
        return ClusterUnavailable(f"cluster {cluster.name} cannot be reached: {describe(exc)}",
                                  retry_after=self.settings.retry_after_seconds)


def describe(exc: SchedulerError) -> str:
    return f"{type(exc).__name__}: {exc.message}"
