"""A member's dashboard: allocated, used, held, available; use by day and by month against the
straight-line pace to the period's end; who spent what; alerts; recent jobs; a CSV of each table.

Every figure is the usage API's own: the page reads `quotas.usage.report` through the API's
schema (`UsageOut`), and the daily series from `quotas.usage.by_day`, the same ledger sums
finer. Rights are the API's: `usage:read` on the member (404 for a member the viewer cannot
see), recent jobs only with `jobs:read`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium import service
from consortium.authz import Scope, member_ids_for, require
from consortium.models import Member
from gateway.api.csv_export import csv_response
from gateway.api.deps import SessionDep
from gateway.footprint import usage as footprint
from gateway.footprint.schemas import AggregatesOut, aggregates_csv
from gateway.jobs.models import Job
from gateway.jobs.repository import JobFilters, list_jobs
from gateway.ui.auth import SignedIn
from gateway.ui.pages import PageRoute, page
from quotas import usage
from quotas.models import Alert
from quotas.rates import to_su
from quotas.schemas import AlertOut, BreakdownLine, UsageOut

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)
RECENT_JOBS = 10
MAX_DAYS = timedelta(days=731)
Slug = Annotated[str, Path(max_length=64)]
Day = Annotated[date | None, Query()]


@dataclass(frozen=True)
class DayLine:
    day: date
    used: Decimal  # SU that day (charges minus refunds)
    cumulative: Decimal  # SU used in the period up to the end of that day
    pace: Decimal | None  # the straight line from 0 at the period's start to its allocation


@dataclass(frozen=True)
class Dashboard:
    member: Member
    usage: UsageOut
    alerts: list[AlertOut]
    jobs: list[Job] | None  # None: the viewer may not read the member's jobs
    days: list[DayLine]
    start: date  # the period filter, both days included
    end: date
    period_start: date | None
    period_end: date | None
    footprint: AggregatesOut  # energy and carbon of the jobs ended in the current period


def _days(report: usage.UsageReport, daily: dict[str, int], start: date,
          end: date) -> list[DayLine]:
    """Each day of [start, end] with its use, the use since the period began, and the pace."""
    begins = min((a.starts_at for a in report.allocations), default=None)
    ends = report.period_end
    granted = report.granted_msu
    total = sum(msu for day, msu in daily.items() if day < start.isoformat())
    lines = []
    for n in range((end - start).days + 1):
        day = start + timedelta(days=n)
        used = daily.get(day.isoformat(), 0)
        total += used
        pace = None
        if begins is not None and ends is not None and ends > begins:
            at = datetime.combine(day + timedelta(days=1), time(), UTC)
            share = min(max((at - begins) / (ends - begins), 0.0), 1.0)
            pace = to_su(round(granted * share))
        lines.append(DayLine(day, to_su(used), to_su(total), pace))
    return lines


def dashboard(session: Session, viewer: SignedIn, slug: str, start: date | None,
              end: date | None) -> Dashboard:
    principal = viewer.principal
    member = service.get_member(session, principal, slug)
    require(principal, Scope.usage_read, member.id)
    report = usage.report(session, member.id)
    begins = min((a.starts_at for a in report.allocations), default=None)
    today = report.at.date()
    period_start = begins.date() if begins else None
    period_end = report.period_end.date() if report.period_end else None
    start = start or period_start or today - timedelta(days=30)
    end = end or (min(today, period_end) if period_end else today)
    start, end = min(start, end), max(start, end)
    start = max(start, end - MAX_DAYS)  # a day a row: a bounded page whatever the query says
    alerts = session.scalars(select(Alert).where(Alert.member_id == member.id)
                             .order_by(Alert.fired_at.desc())).all()
    readable = member_ids_for(principal, Scope.jobs_read)
    jobs = None
    if readable is None or member.id in readable:
        jobs = list_jobs(session, principal, JobFilters(member_id=member.id), before_id=None,
                         limit=RECENT_JOBS)
    return Dashboard(member, UsageOut.of(report), [AlertOut.of(a) for a in alerts], jobs,
                     _days(report, usage.by_day(session, report), start, end), start, end,
                     period_start, period_end,
                     AggregatesOut.of(footprint.of_member(session, member.id, since=begins)))


@router.get("/members/{slug}", response_class=HTMLResponse)
def member_dashboard(*, request: Request, viewer: SignedIn, session: SessionDep, slug: Slug,
                     start: Annotated[Day, Query(alias="from")] = None,
                     end: Annotated[Day, Query(alias="to")] = None) -> HTMLResponse:
    return page(request, "dashboard.html", board=dashboard(session, viewer, slug, start, end))


Table = Literal["days", "months", "projects", "users", "partitions", "alerts", "jobs",
                "footprint"]


def _breakdown_rows(key: str, lines: Sequence[BreakdownLine]) -> Iterator[Sequence[object]]:
    yield [key, "label", "used_su", "held_su", "used_msu", "held_msu"]
    for line in lines:
        yield [line.key, line.label, line.used.su, line.held.su, line.used.msu, line.held.msu]


def _rows(board: Dashboard, table: Table) -> Iterator[Sequence[object]]:
    u = board.usage
    if table == "days":
        yield ["day", "used_su", "cumulative_su", "pace_su"]
        for d in board.days:
            yield [d.day.isoformat(), d.used, d.cumulative, "" if d.pace is None else d.pace]
    elif table == "months":
        yield from _breakdown_rows("month", u.by_month)
    elif table == "projects":
        yield from _breakdown_rows("project_id", u.by_project)
    elif table == "users":
        yield from _breakdown_rows("user_id", u.by_user)
    elif table == "partitions":
        yield from _breakdown_rows("partition", u.by_partition)
    elif table == "footprint":
        yield from aggregates_csv(board.footprint)
    elif table == "alerts":
        yield ["fired_at", "kind", "used_su", "granted_su", "projected_exhaustion_at", "message"]
        for a in board.alerts:
            yield [a.fired_at.isoformat(), a.kind.value, a.used.su, a.granted.su,
                   a.projected_exhaustion_at.isoformat() if a.projected_exhaustion_at else "",
                   a.message]
    else:
        yield ["job", "name", "state", "partition", "created_at", "quote_su", "charge_su"]
        for job in board.jobs or ():
            yield [job.public_id, job.name, job.state.value, job.partition,
                   job.created_at.isoformat(), to_su(job.quote_msu),
                   "" if job.charge_msu is None else to_su(job.charge_msu)]


@router.get("/members/{slug}/{table}.csv")
def member_table_csv(*, viewer: SignedIn, session: SessionDep, slug: Slug, table: Table,
                     start: Annotated[Day, Query(alias="from")] = None,
                     end: Annotated[Day, Query(alias="to")] = None) -> Response:
    """One table of the dashboard as CSV, with the page's period filter."""
    board = dashboard(session, viewer, slug, start, end)
    if table == "jobs" and board.jobs is None:
        require(viewer.principal, Scope.jobs_read, board.member.id)
    return csv_response(list(_rows(board, table)), f"{board.member.slug}-{table}.csv")
