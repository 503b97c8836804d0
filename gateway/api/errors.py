"""RFC 9457 problem details for every error, and the one table from domain errors to statuses."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from consortium import errors as domain
from consortium.service import InvitationGone
from gateway.db import DatabaseUnavailable, unavailable
from gateway.jobs import errors as jobs
from gateway.logging import log, loggable_path
from quotas.errors import QuotaExceeded

PROBLEM_JSON = "application/problem+json"

# The one table from a domain's error class to its HTTP status; its problem type is
# `/problems/{code}` of the class. The most specific class wins (MRO order).
STATUS_OF: dict[type[domain.DomainError], int] = {
    domain.NotFound: 404,
    domain.PermissionDenied: 403,
    domain.Conflict: 409,
    domain.InvalidInput: 422,
    domain.Unauthenticated: 401,
    domain.Throttled: 429,
    # an invitation that was used, revoked or has expired is gone for good: 410, not 404
    InvitationGone: 410,
    QuotaExceeded: 403,
    jobs.ClusterUnavailable: 503,
    jobs.ClusterTimeout: 504,
    jobs.SubmissionRejected: 422,
    jobs.FileTooLarge: 413,
    DatabaseUnavailable: 503,
}


class Problem(BaseModel):
    """The problem+json body (RFC 9457); extension members carry the numbers."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None


REQUEST_ID_HEADER = "X-Request-ID"


def problem_response(
    request: Request,
    status: int,
    *,
    detail: str | None = None,
    type_: str = "about:blank",
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
        **extra,
    }
    return JSONResponse(
        jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def status_for(error: domain.DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 400


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(domain.DomainError, exc)
    status = status_for(exc)
    headers = {}
    extra = dict(exc.extra)
    retry_after = extra.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem_response(
        request, status, detail=exc.detail, type_=f"/problems/{exc.code}", title=exc.title,
        headers=headers, **extra,
    )


# FastAPI's detail for a body it cannot decode (fastapi/routing.py)
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 400 and detail == _UNPARSABLE_BODY:
        # a body FastAPI cannot even decode (not UTF-8) is bad input like any other: 422
        return problem_response(
            request, 422, detail="invalid request: body", type_="/problems/validation",
            title="Validation failed",
            errors=[{"loc": ["body"], "msg": "body could not be decoded", "type": "json_invalid"}],
        )
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(request, exc.status_code, detail=detail,
                            headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
    return problem_response(
        request, 422, detail=f"invalid request: {fields}", type_="/problems/validation",
        title="Validation failed", errors=errors,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette calls this last, outside every middleware: RequestIdMiddleware neither binds
    # the request id to these logs nor adds it to this answer, so both are done here
    request_id = getattr(request.state, "request_id", None)
    refusal = unavailable(exc)
    if refusal is not None:  # no domain raises it: SQLAlchemy's errors are read here
        log.warning("database unavailable", path=loggable_path(request.url.path),
                    request_id=request_id, error=str(exc).splitlines()[0])
        response = await _domain_error(request, refusal)
    else:
        log.error("unhandled error", path=loggable_path(request.url.path),
                  request_id=request_id, exc_info=exc)
        response = problem_response(request, 500, detail="internal error; quote the request id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(domain.DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


# the problem types the HTTP layer answers itself (no route, a method not allowed, a body too
# large, a bug), beside the domain's and the validation's
_HTTP_TYPES = {404: ["about:blank"], 405: ["about:blank"], 413: ["about:blank"],
               422: ["/problems/validation"], 500: ["about:blank"]}


def _subclasses(cls: type[domain.DomainError]) -> list[type[domain.DomainError]]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _subclasses(sub)]


def problem_types() -> dict[int, dict[str, str]]:
    """Status -> {problem type: title} of every refusal the API can send, read from the table."""
    types: dict[int, dict[str, str]] = {}
    for status, urls in _HTTP_TYPES.items():
        types.setdefault(status, {}).update(dict.fromkeys(urls, HTTPStatus(status).phrase))
    for cls in _subclasses(domain.DomainError):
        mapped = next((STATUS_OF[c] for c in cls.__mro__ if c in STATUS_OF), None)
        if mapped is not None:
            types.setdefault(mapped, {})[f"/problems/{cls.code}"] = cls.title
    return types


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can return."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status in (429, 503):
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        out[status] = entry
    return out
