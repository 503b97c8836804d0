"""A cluster's accounting as the quota tests fake it (quotas.backstop.LimitSink)."""

from __future__ import annotations

from gateway.db import Database
from quotas.backstop import PushFailed
from quotas.models import Allocation


class FakeSink:
    """A cluster's accounting: remembers limits, and can be told to fail."""

    def __init__(self, database: Database | None = None, billing_scale: int = 1) -> None:
        self.billing_scale = billing_scale
        self.limits: dict[str, int] = {}
        self.used: dict[str, int] = {}
        self.failing = False
        self.database = database
        self.seen_committed: list[bool] = []

    async def set_limit(self, account: str, billing_minutes: int) -> int | None:
        if self.failing:
            raise PushFailed("sacctmgr: connection refused")
        if self.database is not None:  # what another connection sees while we push
            with self.database.session() as other:
                self.seen_committed.append(other.query(Allocation).count() > 0)
        self.limits[account] = billing_minutes
        return billing_minutes

    async def read_limit(self, account: str) -> int | None:
        return self.limits.get(account)

    async def read_usage(self, account: str) -> int | None:
        return self.used.get(account)
