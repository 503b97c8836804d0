"""The one query the footprint's aggregates read: settled jobs summed by month, member, domain,
project, user and label (a few rows per member and month, whatever the number of jobs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from consortium.models import Member, Project
from gateway.footprint.model import Source
from gateway.jobs.models import Job
from quotas.repository import month_of


@dataclass(frozen=True)
class Row:
    month: str  # YYYY-MM of the jobs' end
    member_id: int
    kind: str
    domain: str
    project_id: int
    user_id: int
    source: Source
    jobs: int
    used_msu: int
    kwh: float
    carbon_g: float


def settled(session: Session, *, since: datetime | None = None, until: datetime | None = None,
            member_id: int | None = None) -> list[Row]:
    """Jobs that ended in [since, until) and were settled (they carry a footprint label)."""
    # the filter below leaves no job without an end
    ended_at = cast(ColumnElement[datetime], Job.ended_at)
    month = month_of(ended_at, session.get_bind().dialect.name)
    keys = (month, Job.member_id, Member.kind, Project.domain, Job.project_id, Job.user_id,
            Job.energy_source)
    query = (select(*keys, func.count(Job.id),
                    func.sum(func.coalesce(Job.charge_msu, 0) - func.coalesce(Job.refund_msu, 0)),
                    func.sum(func.coalesce(Job.energy_kwh, 0.0)),
                    func.sum(func.coalesce(Job.carbon_g, 0.0)))
             .join(Project, Project.id == Job.project_id)
             .join(Member, Member.id == Job.member_id)
             .where(Job.energy_source.is_not(None), Job.ended_at.is_not(None))
             .group_by(*keys))
    if since is not None:
        query = query.where(Job.ended_at >= since)
    if until is not None:
        query = query.where(Job.ended_at < until)
    if member_id is not None:
        query = query.where(Job.member_id == member_id)
    return [Row(month=m, member_id=member, kind=str(getattr(kind, "value", kind)),
                domain=str(getattr(domain, "value", domain)), project_id=project, user_id=user,
                source=Source(str(source)), jobs=int(jobs), used_msu=int(used or 0),
                kwh=float(kwh or 0.0), carbon_g=float(carbon or 0.0))
            for m, member, kind, domain, project, user, source, jobs, used, kwh, carbon
            in session.execute(query)]
