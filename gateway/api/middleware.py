"""Request id and access log, as plain ASGI (no BaseHTTPMiddleware: it buffers and costs time)."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logging import log

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# secrets that travel in a path (invitation tokens) never reach the logs
_SECRET_IN_PATH = re.compile(r"(/invitations/)[^/]+")
# Made ids: random per process, then a counter. They need to be unique, not unpredictable, and
# reading the system's randomness on every request cost more than the rest of this middleware.
_ID_PREFIX = f"{secrets.token_hex(4)}{os.getpid():x}"
_ID_SEQUENCE = itertools.count(1)


def loggable_path(path: str) -> str:
    return _SECRET_IN_PATH.sub(r"\1[redacted]", path)


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
