"""The FastAPI application: create_app(settings) wires settings, database, routes and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from gateway.api.errors import PROBLEM_JSON, Problem, install_error_handlers, problem_types
from gateway.api.middleware import BodyGuard, RequestIdMiddleware
from gateway.api.routes import (
    audit,
    auth,
    clusters,
    invitations,
    jobs,
    ledger,
    members,
    ops,
    quotas,
    reports,
    templates,
    tokens,
    users,
    webhooks,
)
from gateway.auth.authenticator import Authenticator
from gateway.auth.oidc import OidcVerifier
from gateway.db import Database
from gateway.jobs.clusters import Clusters
from gateway.jobs.reads import JobReads
from gateway.jobs.runtime import build_schedulers, close_schedulers, jobs_runtime
from gateway.jobs.service import JobService
from gateway.loop_reads import LoopReads
from gateway.provisioning import install as install_provisioning
from gateway.settings import Settings
from gateway.ui.router import install_ui
from gateway.webhooks.delivery import webhooks_runtime
from schedulers.base import Scheduler

API_PREFIX = "/api/v1"


TAGS = [
    {"name": "auth", "description": "Log in (password, OIDC), who am I, personal access tokens."},
    {"name": "jobs", "description": "Submit a script or a template, quote without submitting, "
                                    "follow, cancel, read the output and the files of a job."},
    {"name": "quotas", "description": "Allocations, usage, the ledger, alerts, rate cards: where "
                                      "the hours went."},
    {"name": "members", "description": "Consortium members, their cluster accounts, users and "
                                       "projects."},
    {"name": "invitations", "description": "Invite a person into a member, accept an "
                                           "invitation."},
    {"name": "users", "description": "User accounts (admins): create, make administrator, "
                                     "deactivate."},
    {"name": "templates", "description": "Admin-approved job scripts with typed parameters."},
    {"name": "webhooks", "description": "A project's job events POSTed to its own URL, signed."},
    {"name": "clusters", "description": "The clusters: partitions, limits, rates, and their "
                                        "health as the trackers last saw it."},
    {"name": "audit", "description": "Who did what, for whom, from where."},
    {"name": "reports", "description": "Energy and carbon of the consortium; the public "
                                       "transparency report."},
    {"name": "operations", "description": "Health, readiness and metrics of the gateway."},
]


def _operation_id(route: APIRoute) -> str:
    tag = str(route.tags[0]) if route.tags else "default"
    return f"{tag}-{route.name.replace('_', '-')}"


def create_app(settings: Settings, database: Database | None = None,
               schedulers: Mapping[str, Scheduler] | None = None) -> FastAPI:
    db = database or Database(settings.effective_database_url)
    # one scheduler per cluster (a test hands in its own); the jobs' trackers run in lifespan
    backends = dict(schedulers) if schedulers is not None else build_schedulers(settings)
    loop_reads = LoopReads(db)
    # one JWKS cache per app, shared by the request threads
    oidc = OidcVerifier(settings.oidc) if settings.oidc else None
    authenticator = Authenticator(db, settings, loop_reads, oidc)
    reads = JobReads(db, loop_reads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_provisioning()  # the trackers retry pending provisioning
        async with (jobs_runtime(settings, db, backends),
                    webhooks_runtime(settings, db, worker=settings.webhooks.worker_in_serve)):
            yield
        loop_reads.close()
        if schedulers is None:
            await close_schedulers(backends)
        if database is None:  # ours to close; a database handed in belongs to the caller
            db.dispose()

    app = FastAPI(
        title="hpcgw",
        version="0.1.0",
        summary="Job-submission gateway of the Montpellier AI consortium",
        lifespan=lifespan,
        docs_url=None,  # served by gateway.ui.docs, from the gateway's own files
        redoc_url=None,
        swagger_ui_parameters={"persistAuthorization": True},
        openapi_tags=TAGS,
        # readable operation ids for generated clients (`jobs-submit`): each route names its
        # own; one that does not gets `<tag>-<function>`
        generate_unique_id_function=_operation_id,
        # sovereign by design: no OpenTelemetry spans, metrics or logs, even if a provider or
        # FASTAPI_OTEL_AUTO_CONFIGURE appears in the environment (and no check per request)
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.settings = settings
    app.state.database = db
    app.state.job_reads = reads
    app.state.authenticator = authenticator
    app.state.oidc = oidc  # its JWKS cache also checks the pages' OIDC sign-in
    app.state.loop_reads = loop_reads
    app.state.schedulers = backends
    app.state.jobs = JobService(db, Clusters(settings.clusters, backends), settings.jobs)
    install_error_handlers(app)
    # Routes are matched in the order included, one after another: the API before the pages,
    # and the jobs first, whose GET /jobs/{id} clients poll (the pages' ~40 routes, tried first,
    # cost a poll more than the rest of its route). No two routers' paths overlap.
    for module in (jobs, auth, tokens, members, invitations, users, quotas, ledger, templates,
                   audit, webhooks, clusters, reports):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(ops.router)
    install_ui(app, settings)  # its CSRF guard innermost, inside the body cap
    # inside it all but the CSRF guard: whatever reads a body (the routes) reads it through
    # the guard's cap
    app.add_middleware(BodyGuard, settings=settings, authenticator=authenticator)
    app.add_middleware(RequestIdMiddleware)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI whose error responses are all problem+json (FastAPI's own 422 included), with
    the 413 of BodyGuard on every operation that takes a body."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                         routes=app.routes, tags=app.openapi_tags)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    types = problem_types()
    for schema_name in ("HTTPValidationError", "ValidationError"):
        components.pop(schema_name, None)
    problem_ref = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Validation failed", "content": problem_ref}
            if "requestBody" in operation:
                responses.setdefault("413", {"description": "Content Too Large",
                                             "content": problem_ref})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    _name_problem_types(response, int(status), types.get(int(status), {}))
    app.openapi_schema = schema
    return schema


def _name_problem_types(response: dict[str, Any], status: int, types: dict[str, str]) -> None:
    """The problem types a status can carry, in its description and as examples (a copy per
    response: generated clients and the docs read them there)."""
    if not types:
        return
    phrase = HTTPStatus(status).phrase
    response["description"] = f"{phrase}; problem type " + ", ".join(f"`{t}`" for t in types)
    response["content"] = {PROBLEM_JSON: {
        "schema": {"$ref": "#/components/schemas/Problem"},
        "examples": {t.rsplit("/", 1)[-1].replace(":", "-"): {
            "summary": title, "value": {"type": t, "title": title, "status": status}}
            for t, title in types.items()}}}
