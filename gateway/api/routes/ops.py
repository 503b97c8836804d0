"""Operations endpoints: liveness, readiness, metrics. Public, outside /api/v1."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from gateway import metrics as figures
from gateway.api.deps import DatabaseDep, SettingsDep
from gateway.api.errors import problems
from gateway.api.schemas import Status
from gateway.jobs.models import JobState

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="operations-healthz", response_model=Status)
def healthz() -> Status:
    """The process answers."""
    return Status(status="ok")


@router.get("/readyz", operation_id="operations-readyz", response_model=Status,
            responses=problems(503))
def readyz(database: DatabaseDep, response: Response) -> Status:
    """The database answers; a load balancer sends traffic only when this is 200."""
    try:
        with database.session() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        response.status_code = 503
        return Status(status="unavailable", detail=type(exc).__name__)
    return Status(status="ok")


@router.get("/metrics", operation_id="operations-metrics", response_class=Response)
def metrics(database: DatabaseDep, settings: SettingsDep) -> Response:
    """Prometheus metrics (docs/monitoring/): requests, jobs, trackers, SSH, quotas, webhooks."""
    body = figures.exposition(database, [c.name for c in settings.clusters],
                              [state.value for state in JobState])
    return Response(body, media_type=CONTENT_TYPE_LATEST)
