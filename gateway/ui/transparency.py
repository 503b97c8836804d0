"""The transparency report as a page, in French and English, with its CSV and JSON: the API's
report (gateway/api/routes/reports.py), the same figures. Open to visitors when the
configuration says so (`public_transparency_report`), else to signed-in people."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from gateway.api.csv_export import csv_response
from gateway.api.deps import SessionDep, SettingsDep
from gateway.api.routes.reports import transparency_for
from gateway.footprint.report import MONTH_PATTERN
from gateway.footprint.schemas import TransparencyOut, transparency_csv
from gateway.ui.auth import MaybeSignedIn
from gateway.ui.pages import PageRoute, SignInRequired, page

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)
Month = Annotated[str | None, Query(pattern=MONTH_PATTERN)]


def _report(session: SessionDep, settings: SettingsDep, viewer: MaybeSignedIn,
            first: str | None, last: str | None) -> TransparencyOut:
    if viewer is None and not settings.public_transparency_report:
        raise SignInRequired
    return transparency_for(session, settings, first, last)


@router.get("/transparency", response_class=HTMLResponse)
def transparency_page(*, request: Request, session: SessionDep, settings: SettingsDep,
                      viewer: MaybeSignedIn,
                      first: Annotated[Month, Query(alias="from")] = None,
                      last: Annotated[Month, Query(alias="to")] = None) -> HTMLResponse:
    report = _report(session, settings, viewer, first, last)
    query = f"?from={report.first_month}&to={report.last_month}"
    return page(request, "transparency.html", report=report, query=query)


@router.get("/transparency.csv")
def transparency_csv_download(*, session: SessionDep, settings: SettingsDep,
                              viewer: MaybeSignedIn,
                              first: Annotated[Month, Query(alias="from")] = None,
                              last: Annotated[Month, Query(alias="to")] = None) -> Response:
    report = _report(session, settings, viewer, first, last)
    return csv_response(transparency_csv(report),
                        f"transparency-{report.first_month}-{report.last_month}.csv")


@router.get("/transparency.json")
def transparency_json_download(*, session: SessionDep, settings: SettingsDep,
                               viewer: MaybeSignedIn,
                               first: Annotated[Month, Query(alias="from")] = None,
                               last: Annotated[Month, Query(alias="to")] = None) -> Response:
    report = _report(session, settings, viewer, first, last)
    return JSONResponse(report.model_dump(mode="json"), headers={
        "Content-Disposition": f'attachment; filename="transparency-{report.first_month}-'
                               f'{report.last_month}.json"'})
