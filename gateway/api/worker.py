"""The app as a serving process runs it: `hpcgw serve` builds it here, in its own process or in
each worker process (`--workers N`: `python -m gateway.api.worker FD SUPERVISOR`, started by
gateway.cli.workers). A worker imports only what serving needs (not the command line, not
alembic: ~12 MiB of every worker's memory, issue 10's RSS floor)."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
import sys

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from gateway.api.app import create_app
from gateway.logging import configure_logging
from gateway.settings import Settings

GRACEFUL_SHUTDOWN_SECONDS = 30
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def uvicorn_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    """uvicorn on settings.host:port; forwarded headers are believed only from trusted
    proxies."""
    proxies = settings.trusted_proxies
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        log_config=None,  # our structlog setup renders uvicorn's records too
        server_header=False,
        # asyncio's loop, not uvloop: with 500 clients, uvloop left some connections unanswered
        # for seconds (p99 5-7 s on one process; 1.4-2.9 s on 2 workers with their own sockets)
        # where asyncio's stays fair (p99 118-209 ms); its gain was 5,300 vs 5,104 304s/s
        loop="asyncio",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def settled(app: FastAPI) -> FastAPI:
    """The app, with everything made so far (the app, its routes and models, the libraries)
    moved out of the cyclic collector's sight: those objects live as long as the process, and
    every full collection walked them all, pausing every request in flight. Measured at 500
    clients, 2 workers (`bench/jobs.py --steps reads --workers 2 --seconds 10`): p99 241-272
    ms before, 133-148 ms after."""
    gc.collect()
    gc.freeze()
    return app


def end_with(supervisor: int) -> None:
    """SIGTERM (a graceful stop) to this worker when its supervisor ends, however it ends
    (SIGKILL, the OOM killer): left alone, a worker would go on serving on its socket with
    nobody to stop or replace it. A supervisor already gone ends the worker at once."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != supervisor:
        sys.exit(f"the supervisor ({supervisor}) has ended")


def main(fd: int, supervisor: int) -> None:
    """A worker process of `supervisor`: settings from the environment the supervisor
    validated, the app served on the listening socket it passed as file descriptor `fd`."""
    end_with(supervisor)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    server = uvicorn.Server(uvicorn_config(settings, settled(create_app(settings))))
    server.run(sockets=[socket.socket(fileno=fd)])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
