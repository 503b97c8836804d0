"""CSRF protection of every form of the pages: asgi-csrf's signed double-submit cookie.

A page's form carries `{{ csrf_field() }}` (the token of the `csrftoken` cookie, set when a page
asks for it); a POST to the pages whose field does not match the cookie is refused with a 403
before any route reads it. The API is left alone: its credentials are bearer tokens, which a
browser never sends on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from asgi_csrf import asgi_csrf
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.errors import PROBLEM_JSON
from gateway.settings import Settings

# Posted before a visitor has any cookie, so protected even then (asgi-csrf lets a POST without
# cookies through otherwise): a forged sign-in would put the victim in the attacker's account.
COOKIELESS_FORMS = ["/ui/sign-in", "/ui/language"]


def _is_page(scope: Scope) -> bool:
    path: str = scope["path"]
    return path == "/" or path.startswith("/ui/")


async def _refused(scope: Scope, send: Send, _reason: object) -> None:
    body = json.dumps({"type": "about:blank", "title": "Forbidden", "status": 403,
                       "detail": "the form's CSRF token is missing or wrong; reload the page",
                       "instance": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", PROBLEM_JSON.encode())]})
    await send({"type": "http.response.body", "body": body})


class CsrfGuard:
    """asgi-csrf around the pages only (their forms' posts, and their GETs, which put the token
    in the forms), its signing key derived from the gateway's secret (the same on every
    replica). Every other request goes straight to the app: asgi-csrf signs a fresh token and
    copies the scope on each request it sees, whether it then skips it or not."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        secret = hmac.new(settings.secret_key.get_secret_value().encode(), b"ui-csrf",
                          hashlib.sha256).hexdigest()
        self.app = app
        self.pages: ASGIApp = asgi_csrf(
            app, signing_secret=secret, always_protect=COOKIELESS_FORMS,
            cookie_secure=settings.base_url.startswith("https://"),
            send_csrf_failed=_refused)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _is_page(scope):
            await self.pages(scope, receive, send)
        else:
            await self.app(scope, receive, send)
