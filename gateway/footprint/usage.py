"""Footprint aggregates of a member (by project, user, domain and month) and of the consortium
for its admins (by member, domain, kind and month)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.models import Member, Project, User
from gateway.footprint.repository import Row, settled
from gateway.footprint.totals import Totals


@dataclass(frozen=True)
class Line:
    key: str
    label: str
    totals: Totals


@dataclass(frozen=True)
class Aggregates:
    since: datetime | None
    until: datetime | None
    total: Totals
    breakdowns: dict[str, list[Line]] = field(default_factory=dict)


def _lines(rows: Iterable[Row], key: Callable[[Row], object],
           labels: dict[str, str]) -> list[Line]:
    sums: dict[str, Totals] = defaultdict(Totals)
    for row in rows:
        sums[str(key(row))].add(row.source, jobs=row.jobs, used_msu=row.used_msu, kwh=row.kwh,
                                carbon_g=row.carbon_g)
    return [Line(k, labels.get(k, k), t) for k, t in sorted(sums.items())]


def _total(rows: Iterable[Row]) -> Totals:
    total = Totals()
    for row in rows:
        total.add(row.source, jobs=row.jobs, used_msu=row.used_msu, kwh=row.kwh,
                  carbon_g=row.carbon_g)
    return total


def of_member(session: Session, member_id: int, *, since: datetime | None = None,
              until: datetime | None = None) -> Aggregates:
    rows = settled(session, since=since, until=until, member_id=member_id)
    projects = {str(p.id): p.slug for p in session.scalars(
        select(Project).where(Project.member_id == member_id))}
    user_ids = sorted({r.user_id for r in rows})
    users = {str(u.id): u.email for u in session.scalars(
        select(User).where(User.id.in_(user_ids)))} if user_ids else {}
    return Aggregates(since, until, _total(rows), {
        "project": _lines(rows, lambda r: r.project_id, projects),
        "user": _lines(rows, lambda r: r.user_id, users),
        "domain": _lines(rows, lambda r: r.domain, {}),
        "month": _lines(rows, lambda r: r.month, {}),
    })


def of_consortium(session: Session, *, since: datetime | None = None,
                  until: datetime | None = None) -> Aggregates:
    """Per member: for the consortium's admins only, never published."""
    rows = settled(session, since=since, until=until)
    members = {str(m.id): m.slug for m in session.scalars(select(Member))}
    return Aggregates(since, until, _total(rows), {
        "member": _lines(rows, lambda r: r.member_id, members),
        "domain": _lines(rows, lambda r: r.domain, {}),
        "kind": _lines(rows, lambda r: r.kind, {}),
        "month": _lines(rows, lambda r: r.month, {}),
    })
