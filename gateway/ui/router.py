"""The web interface as the app includes it: every page group's router, its static files,
the offline API docs and the forms' CSRF guard. A new page group adds its router to ROUTERS."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from gateway.settings import Settings
from gateway.ui import (
    admin,
    admin_members,
    admin_quotas,
    auth,
    dashboard,
    docs,
    home,
    jobs,
    oidc,
    routes,
    submit,
    transparency,
)
from gateway.ui.csrf import CsrfGuard
from gateway.ui.pages import STATIC_DIR, STATIC_PATH

ROUTERS: list[APIRouter] = [home.router, auth.router, oidc.router, dashboard.router,
                            routes.router,
                            jobs.router, submit.router, admin.router, admin_members.router,
                            admin_quotas.router, transparency.router]


def install_ui(app: FastAPI, settings: Settings) -> None:
    """Call before the app's other middleware is added: the guard then sits inside the body
    cap (it reads a form's body to find its token)."""
    for router in ROUTERS:
        app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="ui-static")
    docs.mount_docs(app)
    app.add_middleware(CsrfGuard, settings=settings)
