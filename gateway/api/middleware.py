"""The app's middleware, as plain ASGI (no BaseHTTPMiddleware: it buffers and costs time): request
id, access log and request metrics; bodies capped, and writes authenticated, before a body is
read."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consortium.errors import DomainError, Unauthenticated
from gateway import metrics
from gateway.api.errors import REQUEST_ID_HEADER, problem_response
from gateway.auth.authenticator import Authenticator
from gateway.auth.principal import bearer_token
from gateway.logging import log, loggable_path
from gateway.settings import Settings

_ID_HEADER = REQUEST_ID_HEADER.lower().encode()
_VALID_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
# Made ids: random per process, then a counter. They need to be unique, not unpredictable, and
# reading the system's randomness on every request cost more than the rest of this middleware.
_ID_PREFIX = f"{secrets.token_hex(4)}{os.getpid():x}"
_ID_SEQUENCE = itertools.count(1)


def route_template(fastapi_scope: dict[str, object]) -> str:
    """The path template of the route that answered (`/api/v1/jobs/{job_id}`), never the path
    itself: a metric label must take few values. FastAPI keeps the whole template (the router's
    prefix included; the route object knows only `/jobs/{job_id}`) in its part of the scope,
    where its own telemetry reads it; that dict is made here, before the app runs, so that the
    copies of the scope some middleware make (asgi-csrf) share it."""
    selected = fastapi_scope.get("effective_route_context")
    template = getattr(selected, "path_format", None)
    if template:
        return str(template)
    return metrics.UNMATCHED


class RequestIdMiddleware:
    """Takes a well-formed X-Request-ID from the client or makes one; echoes it on every response
    and binds it to the logs of the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value
                break
        if _VALID_ID.fullmatch(incoming):
            request_id = incoming.decode("latin-1")
        else:
            request_id = f"{_ID_PREFIX}-{next(_ID_SEQUENCE):x}"
            incoming = request_id.encode("latin-1")
        scope.setdefault("state", {})["request_id"] = request_id
        fastapi_scope = scope.setdefault("fastapi", {})
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # a new list: the answer's own may be a Response's, sent again elsewhere
                message["headers"] = [*message.get("headers", ()), (_ID_HEADER, incoming)]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            log.info(
                "request",
                method=scope["method"],
                path=loggable_path(scope["path"]),
                status=status,
                ms=round(elapsed * 1000, 2),
            )
            metrics.observe_request(scope["method"], route_template(fastapi_scope),
                                    status, elapsed)
            structlog.contextvars.unbind_contextvars("request_id")


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_API = "/api/v1/"
# The writes to the API that require no bearer token (their credential, if any, is in the body
# or the path). tests/api/test_body_limits.py holds this list to the routes' own authentication.
PUBLIC_WRITES = re.compile(r"^/api/v1/(auth/token|auth/logout|invitations/[^/]+/accept)$")
# The one route that takes a raw body (a file): capped by jobs.file_max_bytes instead
_UPLOAD = re.compile(r"^/api/v1/members/[^/]+/files/")


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body passes its cap. FastAPI re-raises HTTP exceptions met
    while reading a body (anything else becomes a 400), so the app's handler answers the 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=body_limit_detail(limit))


def body_limit_detail(limit: int) -> str:
    return f"request bodies are limited to {limit} bytes here"


class BodyGuard:
    """No request body costs more than its cap, and none of an unauthenticated write is read.

    The cap: a declared Content-Length over it is answered 413 before anything is read; a body
    without one (chunked) is counted as the app reads it and stopped with a 413 at the first
    byte over. Before the body of a write to the API is read, its bearer token is checked: FastAPI
    reads and parses a route's body before it runs any dependency, so the authentication of the
    route comes too late to spare the parse. A token is let through when the authenticator knows
    it (good within the last minute; no database read, so the hot submit path pays nothing) and
    is otherwise authenticated here, which keeps the principal for the route's dependency. The route
    still authorizes the request as before: this check only decides whether its body is read.
    A write without a body is left to the route (nothing to spare).

    Not Starlette's RequestBodyLimitMiddleware: it looks at Content-Length only once the app
    reads the body (a route that never reads it runs, side effects included, and then has its
    answer replaced), and it answers in plain text, not problem+json.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings,
                 authenticator: Authenticator) -> None:
        self.app = app
        self.settings = settings
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        limit = (self.settings.jobs.file_max_bytes if method == "PUT" and _UPLOAD.match(path)
                 else self.settings.max_body_bytes)
        declared: int | None = None
        has_body = False
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None
                has_body = has_body or declared != 0
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"authorization" and not authorization:
                authorization = value.decode("latin-1")
        if declared is not None and declared > limit:
            response = problem_response(Request(scope), 413, detail=body_limit_detail(limit))
            await response(scope, receive, send)
            return
        if (has_body and method in _WRITES and path.startswith(_API)
                and not PUBLIC_WRITES.match(path)):
            refusal = await self._refusal(scope, authorization)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        if not has_body:  # nothing to count (most requests: GETs)
            await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    async def _refusal(self, scope: Scope, authorization: str) -> ASGIApp | None:
        """The 401 the route's authentication would give, or None when the caller may send."""
        request = Request(scope)
        token = bearer_token(authorization)
        try:
            if token is None:
                raise Unauthenticated("a bearer token is required")
            if not self.authenticator.known(token):
                await self.authenticator.caller(token)
        except DomainError as exc:
            handler = request.app.exception_handlers[DomainError]
            response: ASGIApp = await handler(request, exc)
            return response
        return None
