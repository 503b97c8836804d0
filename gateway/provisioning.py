"""Members' cluster identities made real in Slurm: account, association, limits and block.

Changing an identity or a member's status bumps the identity's `slurm_generation` in the
changing transaction (consortium.service); `provision` runs after the commit, brings Slurm to
what the gateway wants through the cluster's admin identity, then records the generation it
applied. What fails (the cluster unreachable) stays pending: each cluster's tracker retries it
when the cluster answers its probe (gateway.jobs.cluster_status, through the listener that
`install` registers) and so does `hpcgw clusters sync`.

What Slurm is brought to, idempotently:
- an identity: its account and its Unix user's association exist (`ensure_account`), with the
  ledger's limit (quotas.backstop, pushed through gateway.backstop);
- a suspended member, or a removed identity: the account's association blocked (GrpJobs=0,
  GrpSubmitJobs=0: nothing new starts), never deleted (Slurm's accounting history stays); its
  queued jobs held (scontrol hold, as the admin: the member cannot release them) or, with
  `jobs.suspended_jobs = "cancel"`, cancelled: the tracker settles them, their holds refunded;
- a reactivated member: the block lifted and its held jobs released.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import ClusterIdentity, Member, MemberStatus
from gateway.backstop import AccountingSink
from gateway.db import Database
from gateway.jobs import cluster_status
from gateway.jobs.clusters import Cluster, identity_for
from gateway.jobs.config import JobsConfig
from gateway.jobs.models import Job, JobState
from gateway.logging import log
from quotas import backstop
from quotas.backstop import LimitSink
from schedulers.base import AccountingSync, Scheduler
from schedulers.config import ClusterConfig
from schedulers.errors import SchedulerError

T = TypeVar("T")
_ERROR_LENGTH = 500  # ClusterIdentity.slurm_error


@dataclass(frozen=True)
class Target:
    """A pending identity, read with what provisioning it needs."""

    identity_id: int
    generation: int
    member_id: int
    member_name: str
    identity: ClusterIdentity  # detached: read only
    blocked: bool  # member suspended, or identity removed
    queued: tuple[str, ...]  # its member's pending jobs there (scheduler ids)


@dataclass(frozen=True)
class Provisioned:
    """What one identity's provisioning did: `state` pending means it will be tried again."""

    member_id: int
    cluster: str
    account: str
    state: Literal["provisioned", "pending"]
    detail: str


def _pending(session: Session, member_ids: Collection[int] | None,
             cluster: str | None) -> list[Target]:
    query = (select(ClusterIdentity, Member)
             .join(Member, Member.id == ClusterIdentity.member_id)
             .where(ClusterIdentity.slurm_generation > ClusterIdentity.slurm_synced_generation)
             .order_by(ClusterIdentity.id))
    if member_ids is not None:
        query = query.where(ClusterIdentity.member_id.in_(sorted(member_ids)))
    if cluster is not None:
        query = query.where(ClusterIdentity.cluster == cluster)
    targets = []
    for identity, member in session.execute(query).all():
        queued = session.scalars(select(Job.scheduler_id).where(
            Job.member_id == member.id, Job.cluster == identity.cluster,
            Job.state == JobState.pending, Job.scheduler_id.is_not(None))).all()
        session.expunge(identity)
        targets.append(Target(
            identity_id=identity.id, generation=identity.slurm_generation,
            member_id=member.id, member_name=member.name, identity=identity,
            blocked=member.status == MemberStatus.suspended or identity.removed_at is not None,
            queued=tuple(sid for sid in queued if sid is not None)))
    return targets


def _record(session: Session, target: Target, error: str | None) -> None:
    identity = session.get(ClusterIdentity, target.identity_id)
    if identity is None:  # the member was deleted meanwhile
        return
    identity.slurm_error = error[:_ERROR_LENGTH] if error else None
    if error is None:
        # a change that landed meanwhile has a higher generation: it stays pending
        identity.slurm_synced_generation = max(identity.slurm_synced_generation,
                                               target.generation)
        identity.slurm_synced_at = utcnow()


async def _apply(target: Target, config: ClusterConfig, scheduler: Scheduler,
                 sync: AccountingSync | None, suspended_jobs: str) -> list[str]:
    """Bring Slurm to what the target wants; what was done, in words. Raises SchedulerError."""
    identity, done = target.identity, []
    account = identity.slurm_account
    if sync is None:
        done.append(f"the {config.backend} backend has no Slurm accounts to create")
    else:
        if identity.removed_at is None and await sync.ensure_account(
                account, identity.unix_user, target.member_name):
            done.append(f"account {account} and association of {identity.unix_user} created")
        limits = await sync.read_limits(account)
        if limits is not None and limits.blocked != target.blocked:
            await sync.set_limits(limits.model_copy(update={"blocked": target.blocked}))
            done.append("association blocked" if target.blocked else "association unblocked")
    if not target.queued:
        return done
    queued = list(target.queued)
    if target.blocked and suspended_jobs == "cancel":
        for scheduler_id in queued:
            await scheduler.cancel(identity_for(config, identity), scheduler_id)
        done.append(f"{len(queued)} queued job(s) cancelled")
    elif not scheduler.supports_hold:
        done.append(f"the {config.backend} backend cannot hold queued jobs")
    elif target.blocked:
        await scheduler.hold(queued)
        done.append(f"{len(queued)} queued job(s) held")
    else:
        await scheduler.release(queued)
        done.append(f"{len(queued)} queued job(s) released")
    return done


async def provision(database: Database, settings: JobsConfig,
                    schedulers: Mapping[str, Scheduler], *,
                    member_ids: Collection[int] | None = None,
                    cluster: str | None = None) -> list[Provisioned]:
    """Apply every pending identity change (of `member_ids`, on `cluster`, when given).
    Call it after the changes have committed: it talks to the clusters."""
    def db(fn: Callable[[Session], T]) -> Callable[[], T]:
        def run() -> T:
            with database.transaction() as session:
                return fn(session)
        return run

    targets = await anyio.to_thread.run_sync(db(lambda s: _pending(s, member_ids, cluster)))
    configs = {c.name: c for c in settings.clusters}
    # sacctmgr over the schedulers' own connections
    syncs = {name: scheduler.accounting_sync() for name, scheduler in schedulers.items()}
    # identity id -> (error, what was done)
    outcome: dict[int, tuple[str | None, str]] = {}
    for target in targets:
        name = target.identity.cluster
        config, scheduler = configs.get(name), schedulers.get(name)
        if config is None or scheduler is None:
            outcome[target.identity_id] = ("no such cluster in the configuration", "")
            continue
        try:
            done = await _apply(target, config, scheduler, syncs[name],
                                settings.jobs.suspended_jobs)
        except SchedulerError as exc:
            outcome[target.identity_id] = (f"{type(exc).__name__}: {exc.message}", "")
            continue
        outcome[target.identity_id] = (None, "; ".join(done) or "already in place")
    # the ledger's limits, once the accounts exist; an identity whose limit did not go stays
    # pending (the backstop's own outbox would only retry it on the next ledger change)
    live = {t.member_id for t in targets
            if outcome[t.identity_id][0] is None and not t.blocked}
    sinks: dict[str, LimitSink | None] = {
        name: AccountingSink(sync, configs[name].slurm_billing_scale) if sync else None
        for name, sync in syncs.items() if name in configs}
    pushed = await backstop.push(database.transaction, sinks, member_ids=live,
                                 pending_only=False) if live else []
    unpushed = {(p.target.member_id, p.target.cluster): p.error
                for p in pushed if p.error is not None}
    for target in targets:
        error = unpushed.get((target.member_id, target.identity.cluster))
        if error is not None and not target.blocked:
            outcome[target.identity_id] = (f"limit not pushed: {error}", "")

    def record(session: Session) -> None:
        for target in targets:
            _record(session, target, outcome[target.identity_id][0])
    if targets:
        await anyio.to_thread.run_sync(db(record))
    report = []
    for target in targets:
        error, detail = outcome[target.identity_id]
        identity = target.identity
        if error is not None:
            log.warning("identity not provisioned", member_id=target.member_id,
                        cluster=identity.cluster, error=error)
        report.append(Provisioned(
            member_id=target.member_id, cluster=identity.cluster,
            account=identity.slurm_account, state="pending" if error else "provisioned",
            detail=error or detail))
    return report


async def provision_quietly(database: Database, settings: JobsConfig,
                            schedulers: Mapping[str, Scheduler], *,
                            member_ids: Collection[int] | None = None,
                            cluster: str | None = None) -> None:
    """`provision` for callers that must not fail with it (a route after its commit, the
    tracker): an error is logged, and the change stays pending."""
    try:
        await provision(database, settings, schedulers, member_ids=member_ids,
                        cluster=cluster)
    except Exception:  # noqa: BLE001 - the outbox keeps the change for the next attempt
        log.exception("provisioning failed")


async def _retry_pending(database: Database, cluster: Cluster, settings: JobsConfig) -> None:
    await provision_quietly(database, settings, {cluster.name: cluster.scheduler},
                            cluster=cluster.name)


def install() -> None:
    """Retry a cluster's pending provisioning in its tracker's turn, when it answered
    (idempotent; every process running trackers calls it: the app's lifespan and
    `hpcgw tracker`)."""
    cluster_status.on_answered(_retry_pending)
