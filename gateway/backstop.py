"""The quotas' Slurm backstop wired to the scheduler layer: each cluster's AccountingSync as the
LimitSink quotas.backstop pushes through (quotas itself never imports the scheduler layer)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from fractions import Fraction

from gateway.db import Database
from quotas import backstop
from quotas.backstop import DEFAULT_MARGIN, LimitSink, PushFailed, PushResult
from schedulers.base import AccountingSync
from schedulers.config import ClusterConfig
from schedulers.errors import SchedulerError
from schedulers.models import AssociationLimits
from schedulers.registry import build_accounting_sync


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
        try:
            return await self.sync.read_usage(account)
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
            if sync is not None:
                await sync.close()


async def push_limits(database: Database, clusters: Sequence[ClusterConfig], *,
                      member_ids: Collection[int] | None = None, pending_only: bool = True,
                      margin: Fraction = DEFAULT_MARGIN) -> list[PushResult]:
    """Push members' limits to their clusters (call after the changes have committed)."""
    async with limit_sinks(clusters) as sinks:
        return await backstop.push(database.transaction, sinks, member_ids=member_ids,
                                   pending_only=pending_only, margin=margin)
