"""The FastAPI application: create_app(settings) wires settings, database, routes and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.api.errors import PROBLEM_JSON, Problem, install_error_handlers
from gateway.api.middleware import RequestIdMiddleware
from gateway.api.routes import audit, auth, members, ops, tokens
from gateway.db import Database
from gateway.settings import Settings

API_PREFIX = "/api/v1"


def create_app(settings: Settings, database: Database | None = None) -> FastAPI:
    db = database or Database(settings.effective_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if database is None:  # ours to close; a database handed in belongs to the caller
            db.dispose()

    app = FastAPI(
        title="hpcgw",
        version="0.1.0",
        summary="Job-submission gateway of the Montpellier AI consortium",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    app.state.settings = settings
    app.state.database = db
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)

    app.include_router(ops.router)
    for module in (auth, tokens, members, audit):
        app.include_router(module.router, prefix=API_PREFIX)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI whose error responses are all problem+json (FastAPI's own 422 included)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    for schema_name in ("HTTPValidationError", "ValidationError"):
        components.pop(schema_name, None)
    problem_ref = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Validation failed", "content": problem_ref}
    app.openapi_schema = schema
    return schema
