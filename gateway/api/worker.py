"""The app as a serving process runs it: `hpcgw serve` builds it here, in its own process or in
each worker process (`--workers N`). This module imports only what serving needs (not the
command line, not alembic: ~12 MiB of every worker's memory, issue 10's RSS floor)."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.logging import configure_logging
from gateway.settings import Settings


def app_from_environment() -> FastAPI:
    """The app factory of a worker process (`--workers N`): settings from the same environment
    the parent validated."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return settled(create_app(settings))


def settled(app: FastAPI) -> FastAPI:
    """The app, with everything made so far (the app, its routes and models, the libraries)
    moved out of the cyclic collector's sight: those objects live as long as the process, and
    every full collection walked them all, pausing every request in flight. Measured at 500
    clients, 2 workers (`bench/jobs.py --steps reads --workers 2 --seconds 10`): p99 241-272
    ms before, 133-148 ms after."""
    gc.collect()
    gc.freeze()
    return app
