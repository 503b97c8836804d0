"""Structured logs: one JSON object per line on stderr (or console lines), with the request id
bound per request.

An error costs milliseconds and a bounded line in every mode: tracebacks are Python's plain
ones (never rendered with their frames' local variables, which hold requests, headers, tokens
and the app itself: structlog's console default, rich with show_locals, took seconds and
megabytes per error on the event loop), keep their innermost frames, cut each exception's
message (a long one would push every frame out of the kept end), are cut to a bounded size and
have tokens masked.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback

import structlog
from structlog.typing import ExcInfo

TRACEBACK_FRAMES = 30  # innermost frames of each exception of a chain
TRACEBACK_CHARS = 8 * 1024  # the end is kept: the exception and the frames that raised it
MESSAGE_CHARS = 1024  # the start of each exception's message (and of each frame's lines)
# bearer credentials, the gateway's tokens (access, refresh, webhook secrets) and any JWT
_SECRETS = re.compile(r"(?i)(bearer\s+|hpcgw_(?:pat|rt)_|whsec_)[A-Za-z0-9._~+/=-]{8,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# secrets that travel in a path (invitation tokens) never reach the logs
_SECRET_IN_PATH = re.compile(r"(/invitations/)[^/]+")
# Starlette answers an unhandled error through the app's 500 handler, which logs it with its
# request id (gateway.api.errors), then re-raises it to the server, which would log it again.
_SERVER_ECHO = "Exception in ASGI application"


def loggable_path(path: str) -> str:
    return _SECRET_IN_PATH.sub(r"\1[redacted]", path)


def _masked(text: str) -> str:
    return _JWT.sub("[redacted]", _SECRETS.sub(r"\1[redacted]", text))


def _cut(part: str) -> str:
    if len(part) <= MESSAGE_CHARS:
        return part
    return f"{part[:MESSAGE_CHARS]} [{len(part) - MESSAGE_CHARS} characters cut]\n"


def bounded_traceback(exc_info: ExcInfo) -> str:
    # format() yields each frame, and each exception's message, as one part
    parts = traceback.TracebackException(*exc_info, limit=-TRACEBACK_FRAMES).format()
    text = "".join(_cut(_masked(part)) for part in parts)
    if len(text) > TRACEBACK_CHARS:
        text = f"[{len(text) - TRACEBACK_CHARS} characters cut]\n{text[-TRACEBACK_CHARS:]}"
    return text


def _not_a_server_echo(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_SERVER_ECHO)


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.ExceptionRenderer(bounded_traceback),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # the standard library's records (uvicorn, alembic, paramiko) through the same processors
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer,
        ])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs each request
    logging.getLogger("uvicorn.error").addFilter(_not_a_server_echo)


log = structlog.get_logger("hpcgw")
