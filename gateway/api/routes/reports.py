"""Consortium-wide reports: the transparency report (public when the configuration says so)
and the footprint of every member (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from consortium.authz import require_admin
from consortium.base import utcnow
from consortium.bounds import Instant
from consortium.errors import Unauthenticated
from gateway.api.csv_export import csv_response
from gateway.api.deps import Caller, OptionalCaller, SessionDep, SettingsDep
from gateway.api.errors import problems
from gateway.api.routes.quotas import CSV_RESPONSE, Format, _wants_csv
from gateway.footprint import report, usage
from gateway.footprint.schemas import (
    AggregatesOut,
    TransparencyOut,
    aggregates_csv,
    transparency_csv,
)
from gateway.settings import Settings

router = APIRouter(tags=["reports"])
Month = Annotated[str | None, Query(pattern=report.MONTH_PATTERN, examples=["2026-01"])]


def transparency_for(session: Session, settings: Settings, first: str | None,
                     last: str | None) -> TransparencyOut:
    """The report as the API and the public page (gateway/ui/transparency.py) show it."""
    first, last = report.period(first, last, utcnow())
    return TransparencyOut.of(report.transparency(session, first, last, settings.clusters))


@router.get("/reports/transparency", operation_id="reports-transparency",
            response_model=TransparencyOut,
            responses={**CSV_RESPONSE, **problems(401, 422)})
def transparency(*, request: Request, session: SessionDep, settings: SettingsDep,
                 caller: OptionalCaller,
                 first: Annotated[Month, Query(alias="from", description="first month")] = None,
                 last: Annotated[Month, Query(alias="to", description="last month, included")]
                 = None,
                 format: Format = None) -> TransparencyOut | Response:
    """Compute, energy and carbon by use-case domain and by member kind, over whole months;
    a group of fewer than 3 members is folded into "other" (docs/sustainability.md). Public
    when the gateway is configured so, else for signed-in callers."""
    if caller is None and not settings.public_transparency_report:
        raise Unauthenticated("a bearer token is required")
    out = transparency_for(session, settings, first, last)
    if _wants_csv(request, format):
        return csv_response(transparency_csv(out),
                            f"transparency-{out.first_month}-{out.last_month}.csv")
    return out


@router.get("/reports/footprint", operation_id="reports-footprint", response_model=AggregatesOut,
            responses={**CSV_RESPONSE, **problems(401, 403, 422)})
def consortium_footprint(
    *, request: Request, session: SessionDep, principal: Caller,
    since: Annotated[Instant | None, Query(description="jobs ended at or after")] = None,
    until: Annotated[Instant | None, Query(description="jobs ended before")] = None,
    format: Format = None,
) -> AggregatesOut | Response:
    """Energy and carbon of the consortium's settled jobs by member, domain, kind and month
    (admins): never published, the transparency report is."""
    require_admin(principal)
    out = AggregatesOut.of(usage.of_consortium(session, since=since, until=until))
    if _wants_csv(request, format):
        return csv_response(aggregates_csv(out), "consortium-footprint.csv")
    return out
