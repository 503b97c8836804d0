"""Operations endpoints: liveness, readiness, metrics. Public, outside /api/v1."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gateway.api.deps import DatabaseDep
from gateway.api.errors import problems
from gateway.api.schemas import Status

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
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
