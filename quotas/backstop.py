"""The Slurm backstop: each member's GrpTRESMins=billing limit, recomputed from the ledger.

The gateway's hold is the one that says no; Slurm only catches what bypasses it (a job sent
straight to sbatch). So the limit sits above the gateway's own hard stop by a margin.

Slurm's usage counter never goes down (no decay, no reset on the clusters we drive), counts
gross usage (a refund cannot credit it) and is per cluster, so for the member's account on
cluster c:

    limit_c = charged_c + remaining + margin * ceiling
    ceiling   = Σ granted + overdraft of its open (active or settling) allocations
    remaining = max(0, ceiling - Σ used of those allocations)      (used = charged - refunded)
    charged_c = gross charges ever booked on cluster c (closed allocations included)

A refund raises the limit by its amount, an expiry lowers it to what was used, a grant or an
adjustment moves it by the amount granted. Held amounts are not subtracted: Slurm's `safe`
enforcement counts running jobs' time limits itself, and those jobs hold on the gateway side.

Pushing is SSH, so it never happens inside a transaction: changes bump a per-(member, cluster)
generation in `quota_limit_syncs` (an outbox, in the changing transaction), and `push` runs
after commit, reads the balances, talks to Slurm, then records what it pushed. A push that
fails stays pending for the next `hpcgw admin quotas sync`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from fractions import Fraction
from math import ceil
from typing import Any, Protocol

import anyio
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import ClusterIdentity
from quotas import repository
from quotas.models import AllocationState, LimitSync
from quotas.rates import billing_minutes

DEFAULT_MARGIN = Fraction(1, 10)
OPEN_STATES = (AllocationState.active, AllocationState.settling)

Transaction = Callable[[], AbstractContextManager[Session]]


class PushFailed(Exception):
    """The scheduler layer could not apply or read a limit; the message says why."""


class LimitSink(Protocol):
    """One cluster's accounting, as the backstop needs it (gateway.backstop adapts the
    scheduler layer's AccountingSync to this)."""

    @property
    def billing_scale(self) -> int:
        """Slurm's billing for a rate of 1 SU/h on this cluster (see rates.billing_minutes)."""

    async def set_limit(self, account: str, billing_minutes: int) -> int | None:
        """Apply GrpTRESMins=billing=N and return what Slurm holds afterwards."""

    async def read_limit(self, account: str) -> int | None: ...

    async def read_usage(self, account: str) -> int | None:
        """Billing-minutes Slurm has counted for the account; None when it cannot tell."""


def _upsert(session: Session, values: list[dict[str, Any]], set_: dict[str, Any]) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(LimitSync).values(values)
    session.execute(stmt.on_conflict_do_update(index_elements=["member_id", "cluster"],
                                               set_=set_))


def mark_changed(session: Session, member_id: int) -> None:
    """Record in the current transaction that the member's limits must be pushed again."""
    clusters = session.scalars(
        select(ClusterIdentity.cluster).where(ClusterIdentity.member_id == member_id)
    ).all()
    if clusters:
        _upsert(session, [{"member_id": member_id, "cluster": c} for c in clusters],
                {"generation": LimitSync.generation + 1})


@dataclass(frozen=True)
class LimitTarget:
    member_id: int
    cluster: str
    account: str
    limit_msu: int
    generation: int


def targets(session: Session, member_id: int,
            margin: Fraction = DEFAULT_MARGIN) -> list[LimitTarget]:
    """The limits the member's Slurm accounts should carry now, one per cluster identity."""
    # generations first: balances read after them are at least as new, so a change landing
    # in between leaves the outbox row pending instead of being marked done
    generations = {row.cluster: row.generation for row in session.scalars(
        select(LimitSync).where(LimitSync.member_id == member_id)
        .execution_options(populate_existing=True))}
    identities = session.scalars(
        select(ClusterIdentity).where(ClusterIdentity.member_id == member_id)
        .order_by(ClusterIdentity.cluster)
    ).all()
    allocations = repository.allocations_of(session, member_id, states=OPEN_STATES)
    ceiling = sum(a.granted_msu + a.overdraft_msu for a in allocations)
    remaining = max(0, ceiling - sum(a.used_msu for a in allocations))
    buffer = ceil(ceiling * margin)
    charged = repository.charged_by_cluster(session, member_id)
    return [
        LimitTarget(member_id=member_id, cluster=identity.cluster,
                    account=identity.slurm_account,
                    limit_msu=charged.get(identity.cluster, 0) + remaining + buffer,
                    generation=generations.get(identity.cluster, 0))
        for identity in identities
    ]


@dataclass(frozen=True)
class PushResult:
    target: LimitTarget
    billing_minutes: int | None = None  # the limit pushed (GrpTRESMins=billing=N)
    applied_minutes: int | None = None  # what Slurm holds after the push
    error: str | None = None
    skipped: bool = False  # the cluster has no Slurm accounting (local backend): nothing to do


def _members_to_push(session: Session, pending_only: bool) -> list[int]:
    if pending_only:
        stmt = select(LimitSync.member_id).where(
            LimitSync.generation > LimitSync.pushed_generation)
    else:
        stmt = select(ClusterIdentity.member_id)
    return sorted(set(session.scalars(stmt)))


async def push(
    transaction: Transaction,
    sinks: Mapping[str, LimitSink | None],
    *,
    member_ids: Collection[int] | None = None,
    pending_only: bool = True,
    margin: Fraction = DEFAULT_MARGIN,
) -> list[PushResult]:
    """Push the limits of `member_ids` (default: every member with a pending change, or every
    member with a cluster identity when `pending_only` is False). Call it after commit.

    `sinks` maps each configured cluster to its sink, or to None when it has no Slurm
    accounting to push to; a member's identity on a cluster absent from it is an error."""
    def read_targets() -> list[LimitTarget]:
        with transaction() as session:
            repository.one_snapshot(session)  # a limit sums balances and charges
            members = sorted(member_ids) if member_ids is not None else _members_to_push(
                session, pending_only)
            return [t for member_id in members for t in targets(session, member_id, margin)]

    def record(results: list[PushResult]) -> None:
        with transaction() as session:
            for result in results:
                _record(session, result)

    # the database in worker threads: a route's event loop never waits on a connection or a lock
    wanted = await anyio.to_thread.run_sync(read_targets)
    results = []
    for target in wanted:
        if target.cluster not in sinks:
            results.append(PushResult(target, error="no such cluster in the configuration"))
            continue
        sink = sinks[target.cluster]
        if sink is None:
            results.append(PushResult(target, skipped=True))
            continue
        minutes = billing_minutes(target.limit_msu, sink.billing_scale)
        try:
            applied = await sink.set_limit(target.account, minutes)
        except PushFailed as exc:
            results.append(PushResult(target, minutes, error=str(exc)))
            continue
        results.append(PushResult(target, minutes, applied_minutes=applied))
    if results:
        await anyio.to_thread.run_sync(record, results)
    return results


def _record(session: Session, result: PushResult) -> None:
    target = result.target
    if result.error is not None:
        _upsert(session, [{"member_id": target.member_id, "cluster": target.cluster,
                           "generation": 0, "pushed_generation": 0,
                           "last_error": result.error}],
                {"last_error": result.error})
        return
    now = utcnow()
    done = {"pushed_billing_minutes": result.billing_minutes, "pushed_at": now,
            "last_error": None}
    row = session.get(LimitSync, (target.member_id, target.cluster))
    if row is None:
        _upsert(session, [{"member_id": target.member_id, "cluster": target.cluster,
                           "generation": 0, "pushed_generation": 0, **done}], done)
    else:
        row.pushed_generation = max(row.pushed_generation, target.generation)
        for name, value in done.items():
            setattr(row, name, value)


@dataclass(frozen=True)
class DriftLine:
    """The ledger's view of a member's account next to Slurm's, in billing-minutes."""

    target: LimitTarget
    wanted_minutes: int
    ledger_charged_minutes: int
    slurm_used_minutes: int | None = None
    slurm_limit_minutes: int | None = None
    error: str | None = None

    @property
    def usage_drift(self) -> int | None:
        """Slurm's usage beyond the ledger's charges: running jobs' elapsed time so far, plus
        anything that bypassed the gateway (or, negative, charges Slurm never counted)."""
        if self.slurm_used_minutes is None:
            return None
        return self.slurm_used_minutes - self.ledger_charged_minutes

    @property
    def limit_drift(self) -> int | None:
        if self.slurm_limit_minutes is None:
            return None
        return self.slurm_limit_minutes - self.wanted_minutes


async def drift(
    transaction: Transaction,
    sinks: Mapping[str, LimitSink | None],
    *,
    member_ids: Collection[int] | None = None,
    margin: Fraction = DEFAULT_MARGIN,
) -> list[DriftLine]:
    """Compare each member account's ledger charges and wanted limit with what Slurm holds."""
    def read_lines() -> list[tuple[LimitTarget, int]]:
        with transaction() as session:
            repository.one_snapshot(session)
            members = sorted(member_ids) if member_ids is not None else _members_to_push(
                session, pending_only=False)
            lines: list[tuple[LimitTarget, int]] = []
            for member_id in members:
                charged = repository.charged_by_cluster(session, member_id)
                lines.extend((t, charged.get(t.cluster, 0))
                             for t in targets(session, member_id, margin))
            return lines

    lines = await anyio.to_thread.run_sync(read_lines)
    report = []
    for target, charged_msu in lines:
        if target.cluster not in sinks:
            report.append(DriftLine(target, 0, 0, error="no such cluster in the configuration"))
            continue
        sink = sinks[target.cluster]
        if sink is None:  # no Slurm accounting there: nothing to compare
            continue
        wanted = billing_minutes(target.limit_msu, sink.billing_scale)
        charged_minutes = billing_minutes(charged_msu, sink.billing_scale)
        try:
            used = await sink.read_usage(target.account)
            limit = await sink.read_limit(target.account)
        except PushFailed as exc:
            report.append(DriftLine(target, wanted, charged_minutes, error=str(exc)))
            continue
        report.append(DriftLine(target, wanted, charged_minutes, used, limit))
    return report
