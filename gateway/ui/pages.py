"""Rendering a page: the Jinja environment (with the request's language), the security headers,
and the route class that turns a domain error (or the database not answering) into an error page
and a missing sign-in into a redirect to the sign-in page."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from babel.dates import format_date
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from consortium.errors import DomainError
from gateway.api.errors import status_for
from gateway.db import unavailable
from gateway.jobs import details, reasons
from gateway.ui import charts, form_errors, i18n
from quotas.rates import to_su

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_PATH = "/ui/static"

# Self only: no script, style, font or image from anywhere else, no inline script or style.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'; object-src 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show a person's figures: no shared cache keeps them
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _ngettext(singular: str, plural: str, n: int, **variables: Any) -> str:
    text = i18n.translations(i18n.current_locale.get()).ngettext(singular, plural, n)
    return text % {"num": n, **variables}


def _su(value: Decimal | float | None, decimals: int = 3) -> str:
    return "" if value is None else i18n.amount(value, decimals)


def _msu(value: int) -> str:
    return _su(to_su(value))


def _day(value: date | datetime) -> str:
    return format_date(value, format="medium", locale=i18n.current_locale.get())


def _short_day(value: date) -> str:
    return format_date(value, format="d MMM", locale=i18n.current_locale.get())


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _pending_reason(code: str | None) -> str | None:
    """Slurm's pending reason code as a sentence in the request's language."""
    found = reasons.explain(code)
    return None if found is None else str(i18n.in_viewers_language(found))


def job_detail(text: str) -> str:
    """A job's or an event's detail, the gateway's own sentences in the request's language."""
    return str(i18n.in_viewers_language(details.sentence(text)))


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                      extensions=["jinja2.ext.i18n"])
    env.install_gettext_callables(i18n.gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(su=_su, msu=_msu, day=_day, short_day=_short_day, float=_float)
    env.globals.update(line_chart=charts.line_chart, bar_chart=charts.bar_chart,
                       pending_reason=_pending_reason, job_detail=job_detail)
    return env


templates = Jinja2Templates(env=_environment())


class SignInRequired(Exception):
    """Raised by the SignedIn dependency for a visitor: answered by a redirect to sign in."""


def page(request: Request, template: str, status: int = 200, *,
         headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """A template rendered in the request's language, with the layout's context: the viewer
    (request.state.viewer, set by the sign-in dependencies) and the form's CSRF token."""
    csrf = request.scope.get("csrftoken")
    viewer = getattr(request.state, "viewer", None)
    i18n.current_locale.set(viewer.locale if viewer else visitor_locale(request))
    return templates.TemplateResponse(
        request, template,
        {"static": STATIC_PATH, "viewer": viewer, "status_code": status,
         "locale": i18n.current_locale.get(), "locales": i18n.LOCALES,
         "csrf_field": lambda: csrf_field(csrf() if csrf else ""), **context},
        status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def visitor_locale(request: Request) -> str:
    """A visitor's language: the switch's cookie, else French."""
    return i18n.supported(request.cookies.get(i18n.LOCALE_COOKIE)) or i18n.DEFAULT_LOCALE


def csrf_field(token: str) -> Markup:
    return Markup('<input type="hidden" name="csrftoken" value="{}">').format(token)


def local_path(target: str | None, default: str = "/") -> str:
    """`target` when it is a path of this site (never another host: no open redirect)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return default


class PageRoute(APIRoute):
    """Routes of pages: a domain error is an error page with the API's status (404 for what
    the viewer may not see, as the API), a visitor on a signed-in page goes to sign in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/ui/sign-in?next={quote(here)}", status_code=303)
            except DomainError as exc:
                return page(request, "error.html", status_for(exc),
                            error=form_errors.refusal_text(exc))
            except Exception as exc:
                refusal = unavailable(exc)  # the database not answering: as the API, a 503
                if refusal is None:
                    raise
                return page(request, "error.html", status_for(refusal),
                            error=form_errors.refusal_text(refusal),
                            headers={"Retry-After": str(refusal.retry_after)})
        return handle
