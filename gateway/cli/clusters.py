"""`hpcgw clusters check`: can the gateway reach each configured cluster right now?
`hpcgw clusters sync`: apply the members' pending identity changes to Slurm now."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gateway.cli.runtime import console, load_settings
from gateway.db import Database
from gateway.settings import Settings
from schedulers.config import ClusterConfig
from schedulers.models import Health

if TYPE_CHECKING:
    from gateway.provisioning import Provisioned

clusters_app = typer.Typer(help="The configured clusters.", no_args_is_help=True)


@clusters_app.command()
def check() -> None:
    """Connect to every configured cluster; exit 1 if any is down."""
    clusters = load_settings().clusters
    if not clusters:
        console.print("no cluster is configured (see `clusters` in `hpcgw config show`)")
        return
    results = asyncio.run(_check_all(clusters))
    table = Table("cluster", "backend", "state", "latency", "detail")
    for config, health in zip(clusters, results, strict=True):
        table.add_row(
            config.name,
            config.backend,
            "[green]up[/green]" if health.ok else "[bold red]down[/bold red]",
            f"{health.latency_ms:.0f} ms",
            escape(health.detail),
        )
    console.print(table)
    if not all(health.ok for health in results):
        raise typer.Exit(1)


async def _check_all(clusters: list[ClusterConfig]) -> list[Health]:
    return list(await asyncio.gather(*(_check(config) for config in clusters)))


async def _check(config: ClusterConfig) -> Health:
    from schedulers.registry import check_cluster

    # a deadline of our own: one hung cluster must not hold the report of the others
    deadline = config.connect_timeout + config.command_timeout
    try:
        return await asyncio.wait_for(check_cluster(config), timeout=deadline)
    except TimeoutError:
        return Health(cluster=config.name, ok=False, latency_ms=deadline * 1000,
                      detail=f"no answer within {deadline:.0f} s")
    except Exception as exc:  # noqa: BLE001 - any failure is this cluster being down
        return Health(cluster=config.name, ok=False, latency_ms=0.0,
                      detail=f"{type(exc).__name__}: {exc}")


def provision_here(settings: Settings, *, member_ids: list[int] | None = None,
                   cluster: str | None = None) -> list[Provisioned]:
    """Provisioning from this host, with schedulers of its own (what the API does after its
    commit, and each tracker retries); each identity's outcome printed."""
    from gateway.jobs.runtime import build_schedulers, close_schedulers
    from gateway.provisioning import provision

    async def run() -> list[Provisioned]:
        schedulers = build_schedulers(settings)
        database = Database(settings.effective_database_url)
        try:
            return await provision(database, settings, schedulers, member_ids=member_ids,
                                   cluster=cluster)
        finally:
            await close_schedulers(schedulers)
            database.dispose()

    done = asyncio.run(run())
    for line in done:
        console.print(f"{line.cluster}: account {line.account} {line.state} "
                      f"({escape(line.detail)})", highlight=False)
    return done


@clusters_app.command()
def sync(cluster: Annotated[str | None, typer.Argument(
        help="Only this cluster (default: all).")] = None) -> None:
    """Create, block or unblock in Slurm what members' identities are waiting for (the
    trackers retry it too); exit 1 if any is still pending."""
    done = provision_here(load_settings(), cluster=cluster)
    if not done:
        console.print("nothing pending")
    if any(line.state == "pending" for line in done):
        raise typer.Exit(1)
