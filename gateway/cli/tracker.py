"""`hpcgw tracker`: the job trackers without the API."""

from __future__ import annotations

import signal
from typing import Annotated

import anyio
import typer
from prometheus_client import start_http_server

from gateway.cli.runtime import console, fail, load_settings
from gateway.cli.serve import require_schema_at_head
from gateway.db import Database
from gateway.jobs.clusters import Clusters
from gateway.jobs.runtime import build_schedulers, close_schedulers, seed
from gateway.jobs.tracker import ClusterTracker, run_trackers
from gateway.logging import configure_logging
from gateway.provisioning import install as install_provisioning
from gateway.settings import Settings
from gateway.webhooks.delivery import webhooks_runtime
from gateway.webhooks.service import install as install_webhooks


def tracker_command(
    once: Annotated[bool, typer.Option(
        "--once", help="One cycle per cluster, a summary, and exit.")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        help="Serve this process's Prometheus metrics (tracker cycles, SSH, quotas, webhooks) "
             "on this port, at any path.")] = None,
) -> None:
    """Follow every job of every configured cluster to its end (one tracker per cluster across
    replicas) and send the webhooks. Runs until SIGINT/SIGTERM; `hpcgw serve` runs the same
    loops unless `jobs.tracker_in_serve` (`webhooks.worker_in_serve`) is false."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    require_schema_at_head(settings)
    if not settings.clusters:
        fail("no cluster is configured (see `clusters` in `hpcgw config show`)")
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.host)
    install_provisioning()
    anyio.run(_track_once if once else _track, settings)


async def _track(settings: Settings) -> None:
    database = Database(settings.effective_database_url)
    schedulers = build_schedulers(settings)
    stop = anyio.Event()
    try:
        await seed(database)
        async with (webhooks_runtime(settings, database, worker=True),
                    anyio.create_task_group() as group):
            group.start_soon(_stop_on_signal, stop)
            await run_trackers(settings, database, schedulers, stop)
            group.cancel_scope.cancel()
    finally:
        await close_schedulers(schedulers)
        database.dispose()


async def _stop_on_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            return


async def _track_once(settings: Settings) -> None:
    database = Database(settings.effective_database_url)
    schedulers = build_schedulers(settings)
    try:
        install_webhooks()
        for cluster in Clusters(settings.clusters, schedulers):
            report = await ClusterTracker(database, cluster, settings.jobs).cycle()
            if not report.leader:
                console.print(f"{cluster.name}: another tracker holds this cluster",
                              highlight=False)
                continue
            console.print(f"{cluster.name}: {report.tracked} job(s) followed, "
                          f"{len(report.changes)} change(s)", highlight=False)
            for public_id, before, after in report.changes:
                console.print(f"  {public_id}: {before} -> {after}", highlight=False)
    finally:
        await close_schedulers(schedulers)
        database.dispose()
