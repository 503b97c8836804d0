"""The app's middleware, as plain ASGI (no BaseHTTPMiddleware: it buffers and costs time): request
id and access log; bodies capped, and writes authenticated, before a body is read."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time

import structlog
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consortium.errors import DomainError, Unauthenticated
from consortium.tokens import token_hash
from gateway.api.deps import get_principal_detached
from gateway.api.errors import problem_response
from gateway.auth.credentials import Credentials
from gateway.auth.principal import bearer_token
from gateway.db import Database
from gateway.logging import log, loggable_path
from gateway.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Made ids: random per process, then a counter. They need to be unique, not unpredictable, and
# reading the system's randomness on every request cost more than the rest of this middleware.
_ID_PREFIX = f"{secrets.token_hex(4)}{os.getpid():x}"
_ID_SEQUENCE = itertools.count(1)


class RequestIdMiddleware:
    """Takes a well-formed X-Request-ID from the client or makes one; echoes it on every response
    and binds it to the logs of the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        request_id = (incoming if _VALID_ID.match(incoming)
                      else f"{_ID_PREFIX}-{next(_ID_SEQUENCE):x}")
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=loggable_path(scope["path"]),
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
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
    route comes too late to spare the parse. A token is let through when a principal is kept for
    it (gateway.auth.credentials: good within the last minute; no database read, so the hot
    submit path pays nothing) and is otherwise authenticated here through the routes' own
    detached authentication, which keeps the principal for the route's dependency. The route
    still authorizes the request as before: this check only decides whether its body is read.
    A write without a body is left to the route (nothing to spare).

    Not Starlette's RequestBodyLimitMiddleware: it looks at Content-Length only once the app
    reads the body (a route that never reads it runs, side effects included, and then has its
    answer replaced), and it answers in plain text, not problem+json.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings, database: Database,
                 credentials: Credentials) -> None:
        self.app = app
        self.settings = settings
        self.database = database
        self.credentials = credentials

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
            if not self.credentials.known(token_hash(token)):
                await get_principal_detached(request, self.database, self.settings,
                                             _login=None, _token=None)
        except DomainError as exc:
            handler = request.app.exception_handlers[DomainError]
            response: ASGIApp = await handler(request, exc)
            return response
        return None
