"""What the job domain runs beside the API: the seeded templates and the trackers.

`jobs_runtime` is entered by the app's lifespan (`hpcgw serve`); `hpcgw tracker` runs the
trackers alone through `run_trackers`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio

from gateway.db import Database
from gateway.jobs.config import JobsConfig
from gateway.jobs.templates import seed_templates
from gateway.jobs.tracker import run_trackers
from gateway.logging import log
from schedulers.base import Scheduler
from schedulers.registry import build_scheduler


def build_schedulers(settings: JobsConfig) -> dict[str, Scheduler]:
    """One scheduler per configured cluster (nothing connects before first use)."""
    return {config.name: build_scheduler(config) for config in settings.clusters}


async def close_schedulers(schedulers: Mapping[str, Scheduler]) -> None:
    for name, scheduler in schedulers.items():
        try:
            await scheduler.close()
        except Exception:  # noqa: BLE001 - one backend failing to close must not stop the rest
            log.exception("scheduler close failed", cluster=name)


async def seed(database: Database) -> list[str]:
    def run() -> list[str]:
        with database.transaction() as session:
            return seed_templates(session)
    created = await anyio.to_thread.run_sync(run)
    if created:
        log.info("job templates seeded", templates=created)
    return created


@asynccontextmanager
async def jobs_runtime(settings: JobsConfig, database: Database,
                       schedulers: Mapping[str, Scheduler]) -> AsyncIterator[None]:
    """Seed the templates, then track every cluster until the block ends (when enabled)."""
    await seed(database)
    if not (settings.jobs.tracker_in_serve and schedulers):
        yield
        return
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(run_trackers, settings, database, schedulers, stop)
        try:
            yield
        finally:
            stop.set()
