"""Queries of the quotas: row locks, lookups, ledger writes and the aggregates reports need.

Locks: on PostgreSQL `SELECT ... FOR NO KEY UPDATE` (a row lock that still lets other
transactions insert rows referring to the allocation); on SQLite the writer's transaction already
holds the database's write lock from its BEGIN IMMEDIATE (gateway.db), and FOR UPDATE is omitted.
Every path that changes a balance locks allocation rows in ascending id order, so two
transactions can never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    ColumnExpressionArgument,
    Connection,
    Select,
    bindparam,
    func,
    select,
)
from sqlalchemy.orm import Session

from consortium.authz import Principal
from quotas.models import Allocation, AllocationState, EntryKind, Hold, HoldState, LedgerEntry

Actor = Principal | str
USED_KINDS = (EntryKind.charge, EntryKind.refund)


def actor_fields(actor: Actor) -> tuple[str, int | None]:
    if isinstance(actor, Principal):
        return actor.email, actor.user_id
    return actor, None


def _locked(stmt: Select[Allocation]) -> Select[Allocation]:
    return stmt.with_for_update(key_share=True).execution_options(populate_existing=True)


# built once: a hold runs it on every submission, and building costs more than running it
_ACTIVE_ALLOCATIONS = _locked(
    select(Allocation)
    .where(Allocation.member_id == bindparam("member_id"),
           Allocation.state == AllocationState.active)
    .order_by(Allocation.id))


def one_snapshot(session: Session) -> None:
    """Before the transaction's first statement: have all its reads see the database as of one
    moment. PostgreSQL's READ COMMITTED gives each statement a snapshot of its own, so reads
    that are summed together could see a settlement half (its charge but not its allocation's
    balance); REPEATABLE READ keeps the first one. SQLite's transactions already read one. A
    session joined to a connection whose owner already began a transaction (the tests' rollback
    fixture) reads at the level its owner chose."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if isinstance(bind, Connection) and bind.in_transaction():
        return
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def lock_active_allocations(session: Session, member_id: int) -> list[Allocation]:
    """The member's active allocations, locked in id order: the member-level lock of a hold."""
    return list(session.scalars(_ACTIVE_ALLOCATIONS, {"member_id": member_id}))


def lock_allocation(session: Session, allocation_id: int) -> Allocation | None:
    stmt = select(Allocation).where(Allocation.id == allocation_id)
    return session.scalars(_locked(stmt)).first()


def hold_for_job(session: Session, job_id: str, *, fresh: bool = False) -> Hold | None:
    stmt = select(Hold).where(Hold.job_id == job_id)
    if fresh:  # re-read after taking the allocation's lock
        stmt = stmt.execution_options(populate_existing=True)
    return session.scalars(stmt).first()


def open_holds(session: Session, member_id: int) -> tuple[int, int]:
    """(milli-SU held, number of holds) of the member's pending and running jobs."""
    total, count = session.execute(
        select(func.coalesce(func.sum(Hold.amount_msu), 0), func.count())
        .where(Hold.member_id == member_id, Hold.state == HoldState.open)
    ).one()
    return int(total), int(count)


def has_open_holds(session: Session, allocation_id: int) -> bool:
    stmt = select(Hold.id).where(Hold.allocation_id == allocation_id,
                                 Hold.state == HoldState.open).limit(1)
    return session.scalars(stmt).first() is not None


def entry_by_key(session: Session, key: str) -> LedgerEntry | None:
    return session.scalars(select(LedgerEntry).where(LedgerEntry.idempotency_key == key)).first()


def entries_by_keys(session: Session, keys: Sequence[str]) -> dict[str, LedgerEntry]:
    """The entries of these idempotency keys that exist, by key (one query)."""
    return {entry.idempotency_key: entry for entry in session.scalars(
        select(LedgerEntry).where(LedgerEntry.idempotency_key.in_(list(keys))))}


def add_entry(
    session: Session,
    allocation: Allocation,
    kind: EntryKind,
    amount_msu: int,
    *,
    key: str,
    actor: Actor,
    reason: str = "",
    hold: Hold | None = None,
    at: datetime | None = None,
) -> LedgerEntry:
    """Append an entry; the caller moves the allocation's balance in the same transaction.
    `at`: the time of the operation it records, when the caller was given one (else now)."""
    actor_name, actor_user_id = actor_fields(actor)
    entry = LedgerEntry(
        allocation_id=allocation.id,
        member_id=allocation.member_id,
        kind=kind,
        amount_msu=amount_msu,
        project_id=hold.project_id if hold else allocation.project_id,
        user_id=hold.user_id if hold else None,
        cluster=hold.cluster if hold else None,
        partition=hold.partition if hold else None,
        job_id=hold.job_id if hold else None,
        actor=actor_name,
        actor_user_id=actor_user_id,
        reason=reason,
        idempotency_key=key,
    )
    if at is not None:
        entry.at = at
    session.add(entry)
    return entry


def allocations_of(session: Session, member_id: int, *,
                   states: Iterable[AllocationState] | None = None) -> list[Allocation]:
    stmt = select(Allocation).where(Allocation.member_id == member_id)
    if states is not None:
        stmt = stmt.where(Allocation.state.in_(list(states)))
    return list(session.scalars(stmt.order_by(Allocation.starts_at, Allocation.id)))


def used_since(session: Session, since: datetime, *, member_id: int | None = None,
               allocation_ids: Sequence[int] | None = None) -> int:
    """Net milli-SU used (charges minus refunds) from `since` on."""
    stmt = select(func.coalesce(-func.sum(LedgerEntry.amount_msu), 0)).where(
        LedgerEntry.kind.in_(USED_KINDS), LedgerEntry.at >= since
    )
    if member_id is not None:
        stmt = stmt.where(LedgerEntry.member_id == member_id)
    if allocation_ids is not None:
        stmt = stmt.where(LedgerEntry.allocation_id.in_(list(allocation_ids)))
    return int(session.execute(stmt).scalar_one())


def charged_by_cluster(session: Session, member_id: int) -> dict[str, int]:
    """Gross milli-SU ever charged to the member on each cluster (what Slurm has counted)."""
    rows = session.execute(
        select(LedgerEntry.cluster, -func.sum(LedgerEntry.amount_msu))
        .where(LedgerEntry.member_id == member_id, LedgerEntry.kind == EntryKind.charge)
        .group_by(LedgerEntry.cluster)
    )
    return {cluster: int(total) for cluster, total in rows if cluster is not None}


def month_of(column: ColumnExpressionArgument[datetime], dialect: str) -> ColumnElement[str]:
    """'YYYY-MM' of a UTC timestamp column, on either database."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")
    return func.strftime("%Y-%m", column)


def day_of(column: ColumnExpressionArgument[datetime], dialect: str) -> ColumnElement[str]:
    """'YYYY-MM-DD' of a UTC timestamp column, on either database."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def ledger_query(member_id: int, *, kinds: Sequence[EntryKind] = (),
                 allocation_id: int | None = None, job_id: str | None = None,
                 since: datetime | None = None,
                 until: datetime | None = None) -> Select[LedgerEntry]:
    stmt = select(LedgerEntry).where(LedgerEntry.member_id == member_id)
    if kinds:
        stmt = stmt.where(LedgerEntry.kind.in_(list(kinds)))
    if allocation_id is not None:
        stmt = stmt.where(LedgerEntry.allocation_id == allocation_id)
    if job_id is not None:
        stmt = stmt.where(LedgerEntry.job_id == job_id)
    if since is not None:
        stmt = stmt.where(LedgerEntry.at >= since)
    if until is not None:
        stmt = stmt.where(LedgerEntry.at < until)
    return stmt
