"""The quotas' Slurm backstop wired to the scheduler layer: each cluster's AccountingSync as the
LimitSink quotas.backstop pushes through (quotas itself never imports the scheduler layer)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from gateway.db import Database
from quotas import backstop
from quotas.backstop import DEFAULT_MARGIN, LimitSink, PushFailed, PushResult
from schedulers.base import AccountingSync
from schedulers.config import ClusterConfig
from schedulers.errors import SchedulerError
from schedulers.models import AssociationLimits
from schedulers.registry import build_accounting_sync

if TYPE_CHECKING:
    from schedulers.slurm_ssh.transport import Result


@dataclass(frozen=True)
class ShareUsage:
    """`sshare` of an account: the billing-minutes Slurm has counted for it (GrpTRESRaw; our
    clusters never decay or reset usage, so this is all usage since the account exists)."""

    account: str

    def argv(self) -> list[str]:
        return ["sshare", "-n", "-P", "-A", self.account, "-o", "Account,User,GrpTRESRaw"]

    def parse(self, result: Result) -> int | None:
        from schedulers.slurm_ssh.commands import slurm_error

        if result.status != 0:
            raise slurm_error(result, command="sshare")
        for line in result.out.splitlines():
            account, _, rest = line.partition("|")
            user, _, tres = rest.partition("|")
            if account.strip() == self.account and not user.strip():
                counts = dict(item.partition("=")[::2] for item in tres.split(",") if item)
                billing = counts.get("billing")
                return None if billing is None else int(float(billing))
        return None


class AccountingSink:
    """A cluster's AccountingSync seen as the backstop's LimitSink."""

    def __init__(self, sync: AccountingSync, billing_scale: int) -> None:
        self.sync = sync
        self.billing_scale = billing_scale

    async def set_limit(self, account: str, billing_minutes: int) -> int | None:
        try:
            # keep the account's other limits (GrpJobs, blocked) as they are
            current = await self.sync.read_limits(account) or AssociationLimits(account=account)
            applied = await self.sync.set_limits(
                current.model_copy(update={"grp_billing_minutes": billing_minutes}))
        except SchedulerError as exc:
            raise PushFailed(f"{account}: {exc.message}") from exc
        return applied.grp_billing_minutes

    async def read_limit(self, account: str) -> int | None:
        try:
            limits = await self.sync.read_limits(account)
        except SchedulerError as exc:
            raise PushFailed(f"{account}: {exc.message}") from exc
        return limits.grp_billing_minutes if limits else None

    async def read_usage(self, account: str) -> int | None:
        # AccountingSync has no usage read; the slurm_ssh one can run sshare as its admin
        from schedulers.slurm_ssh.accounting import SlurmAccountingSync

        if not isinstance(self.sync, SlurmAccountingSync):
            return None
        scheduler = self.sync.scheduler
        try:
            return await scheduler.execute(scheduler.admin, ShareUsage(account))
        except SchedulerError as exc:
            raise PushFailed(f"{account}: {exc.message}") from exc


@asynccontextmanager
async def limit_sinks(
    clusters: Sequence[ClusterConfig],
) -> AsyncIterator[dict[str, LimitSink | None]]:
    """A sink per configured cluster (None where the backend has no Slurm accounting);
    their connections are closed on exit."""
    syncs = {c.name: (build_accounting_sync(c), c.slurm_billing_scale) for c in clusters}
    try:
        yield {name: AccountingSink(sync, scale) if sync else None
               for name, (sync, scale) in syncs.items()}
    finally:
        for sync, _ in syncs.values():
            close = getattr(sync, "close", None)  # not part of the AccountingSync interface
            if close is not None:
                await close()


async def push_limits(database: Database, clusters: Sequence[ClusterConfig], *,
                      member_ids: Collection[int] | None = None, pending_only: bool = True,
                      margin: Fraction = DEFAULT_MARGIN) -> list[PushResult]:
    """Push members' limits to their clusters (call after the changes have committed)."""
    async with limit_sinks(clusters) as sinks:
        return await backstop.push(database.transaction, sinks, member_ids=member_ids,
                                   pending_only=pending_only, margin=margin)
