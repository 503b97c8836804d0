"""Helpers of the quota tests: a partition's weights, grants and holds in whole SU."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import AuditEvent, Member, Project, User
from quotas import service
from quotas.models import Allocation, AllocationKind, Hold, LedgerEntry
from quotas.rates import Amounts, from_su
from schedulers.config import BillingWeights

# the test cluster's weights: a GPU-hour is 1 SU, a core-hour 0.25, a GiB-hour 0.0625
WEIGHTS = BillingWeights(gpu=1.0, cpu=0.25, mem_gb=0.0625)
ONE_GPU = Amounts(gpus=1, cpus=1, mem_mb=1024)  # 1 SU per hour
HOUR = 3600


def period(*, started_days_ago: float = 1, ends_in_days: float = 30,
           now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or utcnow()
    return now - timedelta(days=started_days_ago), now + timedelta(days=ends_in_days)


def give(session: Session, member: Member, su: int | str, *, project: Project | None = None,
         overdraft_su: int | str = 0, kind: AllocationKind = AllocationKind.grant,
         starts_at: datetime | None = None, ends_at: datetime | None = None) -> Allocation:
    """An allocation of `su` SU (active now, for 30 more days unless told otherwise)."""
    default_start, default_end = period()
    return service.grant(session, member_id=member.id, amount_msu=from_su(Decimal(su)),
                         kind=kind, starts_at=starts_at or default_start,
                         ends_at=ends_at or default_end, actor="admin@consortium.test",
                         project_id=project.id if project else None,
                         overdraft_msu=from_su(Decimal(overdraft_su)))


def job(member: Member, job_id: str | int, *, project: Project | None = None,
        user: User | None = None, partition: str = "gpu",
        cluster: str = "local") -> service.JobRef:
    return service.JobRef(job_id=str(job_id), member_id=member.id,
                          project_id=project.id if project else None,
                          user_id=user.id if user else None, cluster=cluster,
                          partition=partition)


def hold_hours(session: Session, member: Member, job_id: str | int, hours: float,
               **where: object) -> Hold:
    """Hold one GPU for `hours` (that many SU)."""
    return service.hold(session, job(member, job_id, **where), WEIGHTS, ONE_GPU,
                        int(hours * HOUR))


def settle_hours(session: Session, job_id: str | int, hours: float,
                 state: str = "completed") -> service.Settlement:
    return service.settle(session, str(job_id), WEIGHTS, ONE_GPU, int(hours * HOUR),
                          state=state)


def entries_total(session: Session, allocation_id: int) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_msu), 0))
                              .where(LedgerEntry.allocation_id == allocation_id)) or 0)


class Balance(NamedTuple):
    granted: int
    used: int
    held: int
    available: int


def balance(session: Session, allocation_id: int) -> Balance:
    allocation = session.get(Allocation, allocation_id, populate_existing=True)
    assert allocation is not None
    return Balance(allocation.granted_msu, allocation.used_msu, allocation.held_msu,
                   allocation.available_msu)


def audit(session: Session, action: str) -> list[AuditEvent]:
    """The audit events of one action, oldest first (re-read: the app wrote them)."""
    session.expire_all()
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                .order_by(AuditEvent.id)))
