"""A member's usage report. Every figure is a sum of ledger entries: the totals come from the
balance rows (which `ledger verify` proves equal to their entries), the breakdowns and burn
rates from the entries themselves, the held amounts from the open holds.

"Current" allocations are the member's allocations that are not closed (active or settling).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import SQLColumnExpression, func, select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import Project, User
from quotas import repository
from quotas.models import Allocation, AllocationState, Hold, HoldState, LedgerEntry
from quotas.thresholds import burn_per_day, projected_exhaustion

CURRENT_STATES = (AllocationState.active, AllocationState.settling)
WINDOWS = (timedelta(days=7), timedelta(days=30))


@dataclass(frozen=True)
class Line:
    """One row of a breakdown: net used (charges minus refunds) and held (open holds)."""

    key: str
    label: str
    used_msu: int
    held_msu: int


@dataclass(frozen=True)
class Pace:
    window_days: int
    used_msu: int  # net used in the window
    msu_per_day: int
    projected_exhaustion: datetime | None  # when `available` reaches 0 at this pace
    before_period_end: bool | None  # None: nothing used in the window, or no current period


@dataclass(frozen=True)
class UsageReport:
    member_id: int
    at: datetime
    allocations: list[Allocation]
    granted_msu: int
    overdraft_msu: int
    used_msu: int
    held_msu: int
    open_holds: int
    available_msu: int
    percent_used: Decimal | None
    period_end: datetime | None
    pace: list[Pace]
    by_project: list[Line]
    by_user: list[Line]
    by_partition: list[Line]
    by_month: list[Line]


def _percent(part: int, whole: int) -> Decimal | None:
    if whole <= 0:
        return None
    return (Decimal(part * 100) / whole).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _breakdown(session: Session, allocation_ids: list[int], used_key: SQLColumnExpression[Any],
               held_key: SQLColumnExpression[Any] | None) -> dict[str, tuple[int, int]]:
    used = session.execute(
        select(used_key, -func.sum(LedgerEntry.amount_msu))
        .where(LedgerEntry.allocation_id.in_(allocation_ids),
               LedgerEntry.kind.in_(repository.USED_KINDS))
        .group_by(used_key)
    ).all()
    out: dict[str, tuple[int, int]] = {_key(k): (int(v), 0) for k, v in used}
    if held_key is not None:
        held = session.execute(
            select(held_key, func.sum(Hold.amount_msu))
            .where(Hold.allocation_id.in_(allocation_ids), Hold.state == HoldState.open)
            .group_by(held_key)
        ).all()
        for k, v in held:
            out[_key(k)] = (out.get(_key(k), (0, 0))[0], int(v))
    return out


def _key(value: object) -> str:
    return "" if value is None else str(value)


def _lines(figures: dict[str, tuple[int, int]], labels: dict[str, str]) -> list[Line]:
    return [Line(key, labels.get(key, key or "(none)"), used, held)
            for key, (used, held) in sorted(figures.items())]


def by_day(session: Session, report: UsageReport) -> dict[str, int]:
    """Net used per UTC day ('YYYY-MM-DD') of the report's allocations: its by_month, finer."""
    day = repository.day_of(LedgerEntry.at, session.get_bind().dialect.name)
    figures = _breakdown(session, [a.id for a in report.allocations], day, None)
    return {key: used for key, (used, _) in figures.items()}


def report(session: Session, member_id: int, *, now: datetime | None = None) -> UsageReport:
    now = now or utcnow()
    allocations = repository.allocations_of(session, member_id, states=CURRENT_STATES)
    ids = [a.id for a in allocations]
    granted = sum(a.granted_msu for a in allocations)
    used = sum(a.used_msu for a in allocations)
    held = sum(a.held_msu for a in allocations)
    available = sum(a.available_msu for a in allocations if a.in_period(now)
                    and a.state == AllocationState.active)
    period_end = max((a.ends_at for a in allocations), default=None)
    _, open_count = repository.open_holds(session, member_id)

    pace = []
    for window in WINDOWS:
        window_used = repository.used_since(session, now - window, member_id=member_id)
        per_day = burn_per_day(window_used, window)
        projected = projected_exhaustion(available, per_day, now)
        pace.append(Pace(
            window_days=window.days, used_msu=window_used,
            msu_per_day=round(per_day),
            projected_exhaustion=projected,
            before_period_end=(None if projected is None or period_end is None
                               else projected < period_end),
        ))

    by_project = _breakdown(session, ids, LedgerEntry.project_id, Hold.project_id)
    by_user = _breakdown(session, ids, LedgerEntry.user_id, Hold.user_id)
    by_partition = _breakdown(session, ids, LedgerEntry.partition, Hold.partition)
    month = repository.month_of(LedgerEntry.at, session.get_bind().dialect.name)
    by_month = _breakdown(session, ids, month, None)
    project_labels = {str(p.id): p.slug for p in session.scalars(
        select(Project).where(Project.member_id == member_id))}
    user_ids = [int(k) for k in by_user if k]
    user_labels = {str(u.id): u.email for u in session.scalars(
        select(User).where(User.id.in_(user_ids)))} if user_ids else {}

    return UsageReport(
        member_id=member_id, at=now, allocations=allocations, granted_msu=granted,
        overdraft_msu=sum(a.overdraft_msu for a in allocations), used_msu=used, held_msu=held,
        open_holds=open_count, available_msu=available, percent_used=_percent(used, granted),
        period_end=period_end, pace=pace,
        by_project=_lines(by_project, project_labels),
        by_user=_lines(by_user, user_labels),
        by_partition=_lines(by_partition, {}),
        by_month=_lines(by_month, {}),
    )
