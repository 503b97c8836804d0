"""The public transparency report: compute, energy and carbon by use-case domain and by member
kind, the numbers of members, projects and jobs, and the share of jobs measured and estimated,
over whole calendar months, folded so that no organisation can be singled out (folding.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.errors import InvalidInput
from consortium.models import Member
from gateway.footprint.folding import BREAKDOWNS, Piece, fold_month
from gateway.footprint.repository import settled
from gateway.footprint.totals import Totals
from schedulers.config import ClusterConfig

MAX_MONTHS = 120
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


@dataclass
class Group:
    key: str
    totals: Totals = field(default_factory=Totals)
    members: set[int] = field(default_factory=set)
    projects: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Transparency:
    first_month: str  # YYYY-MM, inclusive
    last_month: str
    withheld_months: list[str]  # months in which 1 or 2 members ran jobs: nothing shown
    members_in_consortium: int
    total: Group
    by_domain: list[Group]
    by_kind: list[Group]
    figures: list[ClusterConfig]  # whose PUE and carbon intensity the footprints used


def month_start(month: str) -> datetime:
    year, number = (int(part) for part in month.split("-"))
    return datetime(year, number, 1, tzinfo=UTC)


def next_month(month: str) -> str:
    year, number = (int(part) for part in month.split("-"))
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def months_between(first: str, last: str) -> int:
    (y1, m1), (y2, m2) = ((int(p) for p in x.split("-")) for x in (first, last))
    return (y2 - y1) * 12 + m2 - m1 + 1


def period(first: str | None, last: str | None, now: datetime) -> tuple[str, str]:
    """Whole calendar months (YYYY-MM), `last` included; by default the twelve months to the
    current one."""
    last = last or f"{now.year:04d}-{now.month:02d}"
    if first is None:
        year, month = (int(part) for part in last.split("-"))
        first = f"{year - 1 + month // 12:04d}-{month % 12 + 1:02d}"
    if first > last:
        raise InvalidInput("from must not be after to")
    if months_between(first, last) > MAX_MONTHS:
        raise InvalidInput(f"a report covers at most {MAX_MONTHS} months")
    return first, last


def transparency(session: Session, first_month: str, last_month: str,
                 clusters: Sequence[ClusterConfig]) -> Transparency:
    rows = settled(session, since=month_start(first_month),
                   until=month_start(next_month(last_month)))
    pieces: dict[Piece, Group] = defaultdict(lambda: Group(""))
    for row in rows:
        piece = Piece(row.month, row.member_id, row.kind, row.domain)
        pieces[piece].totals.add(row.source, jobs=row.jobs, used_msu=row.used_msu,
                                 kwh=row.kwh, carbon_g=row.carbon_g)
        pieces[piece].projects.add(row.project_id)
    total = Group("total")
    groups: dict[str, dict[str, Group]] = {b: {} for b in BREAKDOWNS}
    withheld = []
    for month in sorted({p.month for p in pieces}):
        mine = [p for p in pieces if p.month == month]
        folding = fold_month(mine)
        if folding.withheld:
            withheld.append(month)
            continue
        for piece in mine:
            for group in (total, *(groups[b].setdefault(key, Group(key)) for b in BREAKDOWNS
                                   if (key := folding.group(b, piece)))):
                group.totals.merge(pieces[piece].totals)
                group.members.add(piece.member)
                group.projects |= pieces[piece].projects
    return Transparency(
        first_month=first_month, last_month=last_month, withheld_months=withheld,
        members_in_consortium=session.scalar(select(func.count(Member.id))) or 0,
        total=total,
        by_domain=sorted(groups["domain"].values(), key=lambda g: g.key),
        by_kind=sorted(groups["kind"].values(), key=lambda g: g.key),
        figures=list(clusters))
