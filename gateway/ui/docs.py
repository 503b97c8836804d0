"""/docs and /redoc with Swagger UI and ReDoc served by the gateway itself (FastAPI's default
pages load them from a CDN, and are blank on a network without internet). The files come from
the `fastapi-offline` package, which ships both bundles."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_STATIC_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_STATIC_PATH = "/docs/static"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"

# The pages' own inline start-up script and styles are allowed; anything from another host is
# not fetched at all (ReDoc would load its vendor's logo from its CDN).
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
            "font-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")

router = APIRouter(include_in_schema=False)


def _self_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return _self_only(get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} · API",
        swagger_js_url=f"{DOCS_STATIC_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_STATIC_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_STATIC_PATH}/favicon.png",
        oauth2_redirect_url=OAUTH2_REDIRECT,
        # no validator badge: it would send the document's URL to swagger.io
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None}))


@router.get(OAUTH2_REDIRECT, response_class=HTMLResponse)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return _self_only(get_redoc_html(openapi_url=app.openapi_url or "/openapi.json",
                          title=f"{app.title} · API",
                          redoc_js_url=f"{DOCS_STATIC_PATH}/redoc.standalone.js",
                          redoc_favicon_url=f"{DOCS_STATIC_PATH}/favicon.png",
                          with_google_fonts=False))


def mount_docs(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(DOCS_STATIC_PATH, StaticFiles(directory=DOCS_STATIC_DIR), name="docs-static")
