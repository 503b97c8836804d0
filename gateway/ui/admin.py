"""The consortium administrators' pages: who may open them, the audit log and the clusters.

An admin page is the API's admin routes seen through a form: each action calls the API's own
route function with the signed-in admin's principal, so rights, audit records and refusals are
the API's. Anyone else gets the 404 page, as for an object they may not see.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consortium.errors import NotFound
from consortium.models import Outcome
from gateway.api.deps import SessionDep, SettingsDep
from gateway.api.routes import audit as audit_api
from gateway.jobs.cluster_status import cluster_views
from gateway.ui.auth import SignedIn, Viewer
from gateway.ui.date_inputs import DateText, day_start
from gateway.ui.jobs import DetachedViewer
from gateway.ui.pages import PageRoute, page

router = APIRouter(prefix="/ui/admin", include_in_schema=False, route_class=PageRoute)
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
AUDIT_PAGE = 50


def admin_viewer(viewer: SignedIn) -> Viewer:
    """The signed-in person, if a consortium admin (acting as one: the API's rule)."""
    if not viewer.principal.acts_as_admin:
        raise NotFound("no such page")
    return viewer


AdminViewer = Annotated[Viewer, Depends(admin_viewer)]


async def detached_admin(viewer: DetachedViewer) -> Viewer:
    """As AdminViewer, for routes that wait on a cluster (see jobs.detached_viewer)."""
    return admin_viewer(viewer)


DetachedAdmin = Annotated[Viewer, Depends(detached_admin)]


def next_page_url(request: Request, cursor: str | None) -> str | None:
    """This page's address with the next page's cursor, the filters kept."""
    if cursor is None:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    return f"{request.url.path}?{urlencode([*params, ('cursor', cursor)])}"


def form_text(form: Mapping[str, object], name: str) -> str | None:
    """A text input, None when left empty (the API's default applies)."""
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None


@router.get("", response_class=HTMLResponse)
def admin_home(viewer: AdminViewer) -> Response:
    return RedirectResponse("/ui/admin/members", status_code=303)


SearchText = Annotated[str, Query(max_length=320, pattern=PRINTABLE)]


@router.get("/audit", response_class=HTMLResponse)
def audit_log(
    *,
    request: Request,
    viewer: AdminViewer,
    session: SessionDep,
    member: Annotated[str, Query(max_length=64, pattern=r"^[a-z0-9-]*$")] = "",
    actor: SearchText = "",
    action: Annotated[str, Query(max_length=64, pattern=PRINTABLE)] = "",
    outcome: Outcome | None = None,
    since: DateText = "",
    until: DateText = "",
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Response:
    """The audit trail, newest first, searched by member, actor, action, outcome and dates
    (the API's GET /audit)."""
    found = audit_api.list_audit(
        session=session, principal=viewer.principal, member=member or None,
        actor=actor or None, action=action or None, outcome=outcome,
        since=day_start(since, "since"), until=day_start(until, "until", days_after=1),
        cursor=cursor, limit=AUDIT_PAGE)
    return page(request, "admin_audit.html", events=found.items,
                next_url=next_page_url(request, found.next_cursor),
                filters={"member": member, "actor": actor, "action": action,
                         "outcome": outcome.value if outcome else "", "since": since,
                         "until": until},
                outcomes=list(Outcome))


@router.get("/clusters", response_class=HTMLResponse)
def clusters(request: Request, viewer: AdminViewer, session: SessionDep,
             settings: SettingsDep) -> Response:
    """Each cluster's partitions, limits and rates, and its health as its tracker last saw
    it (the API's GET /clusters)."""
    return page(request, "admin_clusters.html", clusters=cluster_views(session, settings.clusters))
