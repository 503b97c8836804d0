"""The backend of a configured cluster. Backends are imported on demand: paramiko only for
slurm_ssh, pyslurm only where it is installed."""

from __future__ import annotations

from schedulers.base import AccountingSync, Scheduler
from schedulers.config import ClusterConfig
from schedulers.models import Health


def build_scheduler(config: ClusterConfig) -> Scheduler:
    match config.backend:
        case "slurm_ssh":
            from schedulers.slurm_ssh.scheduler import SlurmSshScheduler

            return SlurmSshScheduler(config)
        case "local":
            from schedulers.local import LocalScheduler

            return LocalScheduler(config)
        case "pyslurm":
            from schedulers.pyslurm import PySlurmScheduler

            return PySlurmScheduler(config)


def build_accounting_sync(config: ClusterConfig,
                          scheduler: Scheduler | None = None) -> AccountingSync | None:
    """sacctmgr access for slurm_ssh clusters (sharing `scheduler`'s connections when given);
    None for the other backends: the local one has no accounts, and a pyslurm gateway runs
    as an unprivileged user of a login node."""
    if config.backend != "slurm_ssh":
        return None
    from schedulers.slurm_ssh.accounting import SlurmAccountingSync
    from schedulers.slurm_ssh.scheduler import SlurmSshScheduler

    shared = scheduler if isinstance(scheduler, SlurmSshScheduler) else None
    return SlurmAccountingSync(config, scheduler=shared)


async def check_cluster(config: ClusterConfig) -> Health:
    """One health probe with a scheduler of its own (`hpcgw clusters check`)."""
    scheduler = build_scheduler(config)
    try:
        return await scheduler.health()
    finally:
        await scheduler.close()
