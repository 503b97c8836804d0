"""A quote without a submission: the request resolved and checked as a submission is
(gateway.jobs.admission), priced, and set against the member's job cap and quota, in one read
transaction that writes nothing."""

from __future__ import annotations

from sqlalchemy.orm import Session

from consortium.authz import Principal
from gateway.jobs.admission import admit, amounts_of, over_job_cap
from gateway.jobs.clusters import Clusters
from gateway.jobs.config import JobsSettings
from gateway.jobs.schemas import JobCreate, JobQuote
from quotas import service as quotas
from quotas.rates import SECONDS_PER_HOUR, price

# templates may print the job's id; a quote has none yet
QUOTE_ID = "000000000000"


def quote(session: Session, clusters: Clusters, settings: JobsSettings, principal: Principal,
          request: JobCreate) -> JobQuote:
    admitted = admit(session, clusters, principal, request, QUOTE_ID, lock_member=False)
    res, billing = admitted.resolved.resources, admitted.partition.billing
    amounts = amounts_of(res, admitted.partition)
    total = quotas.quote(billing, amounts, res.time_limit_minutes * 60, res.tasks)
    fit = quotas.fit(session, admitted.member.id, admitted.project.id, total)
    refusal = over_job_cap(admitted, settings) or fit.refusal
    return JobQuote(cluster=admitted.cluster.name, partition=admitted.partition.name,
                    resources=res.model_dump(), tasks=res.tasks,
                    rate_msu_per_hour=price(billing, amounts, SECONDS_PER_HOUR),
                    quote_msu=total, available_msu=fit.available_msu,
                    fits=refusal is None, message=refusal.detail if refusal else None)
