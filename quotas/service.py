"""The quota service: grants, holds, settlements, releases, refunds, adjustments, period ends.

Every function works in the caller's transaction: it adds and flushes, never commits. A
balance column moves only together with the ledger entry that explains it.

Which allocation a hold draws on: among the member's active allocations whose period contains
now, first those earmarked to the job's project, then the general ones (no project); within
each group the one ending soonest (hours that expire first are used first), then the oldest.
The first with enough available takes the whole hold: a hold is never split. It must also fit
the member as a whole: the sum of what all its current allocations have available (an
earmarked allocation cannot be spent while another of the member's allocations is overdrawn).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.audit import CLI_CONTEXT, RequestContext, record
from consortium.base import utcnow
from consortium.errors import Conflict, InvalidInput, NotFound
from consortium.models import Member, Project
from quotas import backstop, repository, thresholds
from quotas.errors import QuotaExceeded
from quotas.metrics import QUOTA_HOLDS, QUOTA_REFUSALS, QUOTA_SETTLEMENTS
from quotas.models import (
    Alert,
    Allocation,
    AllocationKind,
    AllocationState,
    EntryKind,
    Hold,
    HoldState,
    LedgerEntry,
)
from quotas.rates import Amounts, Weights, format_su, price
from quotas.repository import Actor

SYSTEM = "system"
# a job the cluster killed (node lost, node never booted) is not the member's doing
AUTO_REFUND_STATES = frozenset({"node_fail", "boot_fail"})


@dataclass(frozen=True)
class JobRef:
    """What the ledger records about a job; quotas knows a job by its id and these numbers."""

    job_id: str
    member_id: int
    project_id: int | None
    user_id: int | None
    cluster: str
    partition: str


def _draw_order(allocation: Allocation) -> tuple[datetime, int]:
    return allocation.ends_at, allocation.id


def grant(
    session: Session,
    *,
    member_id: int,
    amount_msu: int,
    kind: AllocationKind,
    starts_at: datetime,
    ends_at: datetime,
    actor: Actor,
    project_id: int | None = None,
    overdraft_msu: int = 0,
    note: str = "",
    context: RequestContext = CLI_CONTEXT,
    idempotency_key: str | None = None,
) -> Allocation:
    """A new allocation for a member (consortium admins only: the caller checks)."""
    if idempotency_key is not None:
        previous = repository.entry_by_key(session, f"grant:request:{idempotency_key}")
        if previous is not None:
            allocation = session.get(Allocation, previous.allocation_id)
            if allocation is None or allocation.member_id != member_id:
                raise Conflict("this idempotency key was used for another grant")
            return allocation
    if amount_msu <= 0:
        raise InvalidInput("a grant must be positive")
    if overdraft_msu < 0:
        raise InvalidInput("an overdraft cannot be negative")
    if ends_at <= starts_at:
        raise InvalidInput("the period must end after it starts")
    if session.get(Member, member_id) is None:
        raise NotFound("no such member")
    if project_id is not None:
        project = session.get(Project, project_id)
        if project is None or project.member_id != member_id:
            raise InvalidInput("the project must be one of the member's")
    actor_name, _ = repository.actor_fields(actor)
    allocation = Allocation(member_id=member_id, project_id=project_id, kind=kind,
                            state=AllocationState.active, starts_at=starts_at, ends_at=ends_at,
                            overdraft_msu=overdraft_msu, note=note, created_by=actor_name,
                            granted_msu=amount_msu, charged_msu=0, refunded_msu=0, held_msu=0,
                            expired_msu=0)
    session.add(allocation)
    session.flush()
    key = f"grant:request:{idempotency_key}" if idempotency_key else f"grant:{allocation.id}"
    repository.add_entry(session, allocation, EntryKind.grant, amount_msu, key=key, actor=actor,
                         reason=note)
    record(session, actor=actor, action="allocation.grant", target_type="allocation",
           target_id=allocation.id, member_id=member_id, context=context,
           details={"amount_msu": amount_msu, "kind": kind.value, "project_id": project_id,
                    "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                    "overdraft_msu": overdraft_msu})
    backstop.mark_changed(session, member_id)
    session.flush()
    return allocation


def quote(weights: Weights, requested: Amounts, time_limit_seconds: int, tasks: int = 1) -> int:
    """What a job costs at most: requested resources for its whole time limit, times its tasks
    (a job array's tasks each get the resources and the time limit)."""
    return price(weights, requested, time_limit_seconds) * tasks


def hold(
    session: Session,
    job: JobRef,
    weights: Weights,
    requested: Amounts,
    time_limit_seconds: int,
    *,
    actor: Actor = SYSTEM,
    now: datetime | None = None,
    new_job: bool = False,
    tasks: int = 1,
) -> Hold:
    """Reserve the job's quote, or raise QuotaExceeded. Idempotent per job id.

    Check and reservation happen under the lock of the member's active allocations, so two
    submissions racing for the last hours cannot both pass. Reads balance rows, never the ledger.
    `new_job`: the caller created the job in this transaction, so it can hold nothing yet: the
    idempotency read is skipped and the hold is written with the caller's next flush (the
    unique job id of holds still refuses a second one, at the latest on commit).
    """
    amount = quote(weights, requested, time_limit_seconds, tasks)
    allocations = repository.lock_active_allocations(session, job.member_id)
    existing = None if new_job else repository.hold_for_job(session, job.job_id, fresh=True)
    if existing is not None:
        if existing.member_id != job.member_id:
            raise Conflict(f"job {job.job_id} already holds quota for another member")
        return existing
    now = now or utcnow()
    chosen = _draw(session, allocations, member_id=job.member_id,
                   project_id=job.project_id, amount=amount, now=now)
    if isinstance(chosen, QuotaExceeded):
        QUOTA_REFUSALS.labels(job.cluster).inc()
        raise chosen
    new = Hold(job_id=job.job_id, allocation_id=chosen.id, member_id=job.member_id,
               project_id=job.project_id, user_id=job.user_id, cluster=job.cluster,
               partition=job.partition, amount_msu=amount, state=HoldState.open,
               charged_msu=0, refunded_msu=0, created_at=now)
    session.add(new)
    chosen.held_msu += amount
    repository.add_entry(session, chosen, EntryKind.hold, -amount, key=f"hold:{job.job_id}",
                         actor=actor, hold=new, at=now)
    QUOTA_HOLDS.labels(job.cluster).inc()
    if not new_job:
        session.flush()
    return new


def _draw(session: Session, allocations: Sequence[Allocation], *, member_id: int,
          project_id: int | None, amount: int, now: datetime) -> Allocation | QuotaExceeded:
    """The allocation a hold of `amount` draws on (module docstring), or the refusal with its
    numbers."""
    usable = [a for a in allocations if a.in_period(now)]
    member_available = sum(a.available_msu for a in usable)
    earmarked = sorted((a for a in usable
                        if a.project_id is not None and a.project_id == project_id),
                       key=_draw_order)
    general = sorted((a for a in usable if a.project_id is None), key=_draw_order)
    candidates = earmarked + general
    chosen = next((a for a in candidates if a.available_msu >= amount), None)
    if chosen is None or member_available < amount:
        held, count = repository.open_holds(session, member_id)
        best = max((a.available_msu for a in candidates), default=0)
        return QuotaExceeded(requested_msu=amount, available_msu=min(best, member_available),
                             held_msu=held, open_holds=count)
    return chosen


@dataclass(frozen=True)
class Fit:
    available_msu: int  # what the member's current allocations have available (as usage's)
    refusal: QuotaExceeded | None  # why a hold of the amount would be refused now


def fit(session: Session, member_id: int, project_id: int | None, amount: int, *,
        now: datetime | None = None) -> Fit:
    """Whether a hold of `amount` would be taken now, decided as `hold` decides, without
    locking or writing anything (a quote: a later hold may still be refused)."""
    now = now or utcnow()
    allocations = repository.allocations_of(session, member_id,
                                            states=[AllocationState.active])
    drawn = _draw(session, allocations, member_id=member_id, project_id=project_id,
                  amount=amount, now=now)
    return Fit(available_msu=sum(a.available_msu for a in allocations if a.in_period(now)),
               refusal=drawn if isinstance(drawn, QuotaExceeded) else None)


def _locked_hold(session: Session, job_id: str) -> tuple[Hold, Allocation]:
    """The job's hold and its allocation, the allocation row locked and the hold re-read."""
    found = repository.hold_for_job(session, job_id)
    if found is None:
        raise NotFound(f"no quota hold for job {job_id}")
    allocation = repository.lock_allocation(session, found.allocation_id)
    current = repository.hold_for_job(session, job_id, fresh=True)
    if allocation is None or current is None:
        raise NotFound(f"no quota hold for job {job_id}")
    return current, allocation


def _release(session: Session, held: Hold, allocation: Allocation, *, actor: Actor,
             reason: str, now: datetime) -> None:
    allocation.held_msu -= held.amount_msu
    repository.add_entry(session, allocation, EntryKind.release, held.amount_msu,
                         key=f"release:{held.job_id}", actor=actor, reason=reason, hold=held,
                         at=now)
    held.state = HoldState.released
    held.closed_at = now


def release(session: Session, job_id: str, *, actor: Actor = SYSTEM, reason: str = "",
            now: datetime | None = None) -> Hold:
    """Give the hold back without a charge (the submission failed). Idempotent."""
    held, allocation = _locked_hold(session, job_id)
    if held.state == HoldState.open:
        _release(session, held, allocation, actor=actor, reason=reason, now=now or utcnow())
        session.flush()
    return held


@dataclass(frozen=True)
class Settlement:
    hold: Hold
    charge_msu: int
    refund_msu: int
    alerts: list[Alert] = field(default_factory=list)  # fired by this settlement


def _refund(session: Session, held: Hold, allocation: Allocation, amount_msu: int, *,
            key: str, actor: Actor, reason: str) -> LedgerEntry:
    allocation.refunded_msu += amount_msu
    held.refunded_msu += amount_msu
    return repository.add_entry(session, allocation, EntryKind.refund, amount_msu, key=key,
                                actor=actor, reason=reason, hold=held)


def settle(
    session: Session,
    job_id: str,
    weights: Weights,
    allocated: Amounts,
    elapsed_seconds: int,
    *,
    state: str,
    actor: Actor = SYSTEM,
    now: datetime | None = None,
) -> Settlement:
    """Charge what the job used (allocated resources * elapsed, priced like the quote), release
    its hold, and refund it whole when the cluster killed it (AUTO_REFUND_STATES).

    Idempotent: settling a settled job returns the first settlement and writes nothing. A job
    whose hold was released (submission thought failed) that turns out to have run is charged.
    """
    held, allocation = _locked_hold(session, job_id)
    if held.state == HoldState.settled:
        return Settlement(held, held.charged_msu, held.refunded_msu)
    now = now or utcnow()
    if held.state == HoldState.open:
        _release(session, held, allocation, actor=actor, reason="settled", now=now)
    charge = price(weights, allocated, elapsed_seconds)
    allocation.charged_msu += charge
    repository.add_entry(session, allocation, EntryKind.charge, -charge, key=f"charge:{job_id}",
                         actor=actor, reason=f"job ended: {state}", hold=held, at=now)
    held.state = HoldState.settled
    held.charged_msu = charge
    held.closed_at = now
    QUOTA_SETTLEMENTS.labels(held.cluster).inc()
    refund = 0
    if state in AUTO_REFUND_STATES and charge > 0:
        refund = charge
        _refund(session, held, allocation, charge, key=f"refund:auto:{job_id}", actor=actor,
                reason=f"automatic: the job ended in {state}")
        backstop.mark_changed(session, held.member_id)
    alerts = thresholds.evaluate(session, allocation, now)
    session.flush()
    return Settlement(held, charge, refund, alerts)


@dataclass(frozen=True)
class TaskUse:
    """What one ended task of a job array used, as its charge is priced."""

    task_id: int
    allocated: Amounts
    elapsed_seconds: int
    state: str


def settle_tasks(
    session: Session,
    job_id: str,
    weights: Weights,
    ended: Sequence[TaskUse],
    *,
    share_msu: int,
    actor: Actor = SYSTEM,
    now: datetime | None = None,
) -> dict[int, tuple[int, int]]:
    """Tasks of a job array have ended: each one's share of the hold (the quote of one task)
    given back, what it used charged (allocated resources * elapsed, priced like the quote),
    refunded whole when the cluster killed it. The hold stays open for the other tasks;
    `close_hold` settles it after the last. (charge, refund) by task id. Idempotent per task
    (its charge entry's key); one lock and one flush for all (an array has up to 1001)."""
    held, allocation = _locked_hold(session, job_id)
    keys = [f"{job_id}:{use.task_id}" for use in ended]
    written = repository.entries_by_keys(
        session, [f"{kind}:{key}" for key in keys for kind in ("charge", "refund:auto")])
    results: dict[int, tuple[int, int]] = {}
    wrote = refunded = False
    for use, key in zip(ended, keys, strict=True):
        charged = written.get(f"charge:{key}")
        if charged is not None:
            auto = written.get(f"refund:auto:{key}")
            results[use.task_id] = (-charged.amount_msu, auto.amount_msu if auto else 0)
            continue
        wrote = True
        share = min(share_msu, held.amount_msu) if held.state == HoldState.open else 0
        if share > 0:
            # the hold shrinks as tasks end: what it holds is what may still be used
            held.amount_msu -= share
            allocation.held_msu -= share
            repository.add_entry(session, allocation, EntryKind.release, share,
                                 key=f"release:{key}", actor=actor,
                                 reason=f"task {use.task_id} ended", hold=held)
        charge = price(weights, use.allocated, use.elapsed_seconds)
        allocation.charged_msu += charge
        held.charged_msu += charge
        repository.add_entry(session, allocation, EntryKind.charge, -charge,
                             key=f"charge:{key}", actor=actor,
                             reason=f"task {use.task_id} ended: {use.state}", hold=held)
        given_back = charge if use.state in AUTO_REFUND_STATES else 0
        if given_back > 0:
            refunded = True
            _refund(session, held, allocation, given_back, key=f"refund:auto:{key}",
                    actor=actor, reason=f"automatic: task {use.task_id} ended in {use.state}")
        results[use.task_id] = (charge, given_back)
    if wrote:
        if refunded:
            backstop.mark_changed(session, held.member_id)
        thresholds.evaluate(session, allocation, now or utcnow())
        session.flush()
    return results


def close_hold(session: Session, job_id: str, *, actor: Actor = SYSTEM,
               now: datetime | None = None) -> Settlement:
    """The last task of a job array has ended (each settled by `settle_task`): what is left of
    the hold is released and the hold is settled with the sum of the tasks' charges and
    refunds. Idempotent."""
    held, allocation = _locked_hold(session, job_id)
    if held.state != HoldState.settled:
        now = now or utcnow()
        if held.state == HoldState.open and held.amount_msu > 0:
            _release(session, held, allocation, actor=actor, reason="settled", now=now)
        held.state = HoldState.settled
        held.closed_at = now
        QUOTA_SETTLEMENTS.labels(held.cluster).inc()
        session.flush()
    return Settlement(held, held.charged_msu, held.refunded_msu)


def refund(
    session: Session,
    *,
    member_id: int,
    job_id: str,
    reason: str,
    actor: Actor,
    amount_msu: int | None = None,
    context: RequestContext = CLI_CONTEXT,
    idempotency_key: str | None = None,
) -> LedgerEntry:
    """An admin gives back part or all of a settled job's charge (default: all that is left)."""
    if not reason.strip():
        raise InvalidInput("a refund needs a reason")
    key = f"refund:manual:{idempotency_key or uuid.uuid4().hex}"
    previous = repository.entry_by_key(session, key)
    if previous is not None:
        if previous.job_id != job_id or previous.member_id != member_id:
            raise Conflict("this idempotency key was used for another refund")
        return previous
    try:
        held, allocation = _locked_hold(session, job_id)
    except NotFound:
        raise NotFound(f"member has no charged job {job_id}") from None
    if held.member_id != member_id:
        raise NotFound(f"member has no charged job {job_id}")
    refundable = held.charged_msu - held.refunded_msu
    amount = refundable if amount_msu is None else amount_msu
    if held.state != HoldState.settled or amount <= 0 or amount > refundable:
        raise InvalidInput(f"job {job_id} has {format_su(max(refundable, 0))} of charge left to "
                           "refund; the amount must be positive and at most that")
    entry = _refund(session, held, allocation, amount, key=key, actor=actor, reason=reason)
    session.flush()
    record(session, actor=actor, action="quota.refund", target_type="ledger_entry",
           target_id=entry.id, member_id=member_id, context=context,
           details={"job_id": job_id, "amount_msu": amount, "reason": reason})
    backstop.mark_changed(session, member_id)
    session.flush()
    return entry


def adjust(
    session: Session,
    *,
    member_id: int,
    allocation_id: int,
    amount_msu: int,
    reason: str,
    actor: Actor,
    context: RequestContext = CLI_CONTEXT,
    idempotency_key: str | None = None,
) -> LedgerEntry:
    """Correct an allocation's granted amount up or down, with a reason."""
    if not reason.strip():
        raise InvalidInput("an adjustment needs a reason")
    if amount_msu == 0:
        raise InvalidInput("an adjustment cannot be zero")
    key = f"adjust:{idempotency_key or uuid.uuid4().hex}"
    previous = repository.entry_by_key(session, key)
    if previous is not None:
        if previous.allocation_id != allocation_id:
            raise Conflict("this idempotency key was used for another adjustment")
        return previous
    allocation = repository.lock_allocation(session, allocation_id)
    if allocation is None or allocation.member_id != member_id:
        raise NotFound("no such allocation")
    if allocation.state == AllocationState.closed:
        raise Conflict("the allocation is closed")
    if allocation.granted_msu + amount_msu < 0:
        raise InvalidInput(f"the allocation was granted {format_su(allocation.granted_msu)}; "
                           "an adjustment cannot take more than that")
    allocation.granted_msu += amount_msu
    entry = repository.add_entry(session, allocation, EntryKind.adjust, amount_msu, key=key,
                                 actor=actor, reason=reason)
    session.flush()
    record(session, actor=actor, action="allocation.adjust", target_type="allocation",
           target_id=allocation.id, member_id=member_id, context=context,
           details={"amount_msu": amount_msu, "reason": reason, "entry_id": entry.id})
    backstop.mark_changed(session, member_id)
    thresholds.evaluate(session, allocation)
    session.flush()
    return entry


def advance_periods(session: Session, *, now: datetime | None = None,
                    actor: Actor = SYSTEM) -> list[Allocation]:
    """Move allocations along: active → settling once their period is over, settling → closed
    once no hold is left open on them, with an expire entry for what was not used.

    A debt (used beyond granted, within the overdraft) is not expired: it stays on the record.
    """
    now = now or utcnow()
    due = session.scalars(
        select(Allocation.id)
        .where(Allocation.state.in_([AllocationState.active, AllocationState.settling]),
               Allocation.ends_at <= now)
        .order_by(Allocation.id)
    ).all()
    changed = []
    for allocation_id in due:
        allocation = repository.lock_allocation(session, allocation_id)
        if allocation is None:
            continue
        if allocation.state == AllocationState.active:
            allocation.state = AllocationState.settling
            record(session, actor=actor, action="allocation.settling", target_type="allocation",
                   target_id=allocation.id, member_id=allocation.member_id)
            changed.append(allocation)
        if (allocation.state == AllocationState.settling
                and not repository.has_open_holds(session, allocation.id)):
            left = max(0, allocation.available_msu - allocation.overdraft_msu)
            if left:
                allocation.expired_msu += left
                repository.add_entry(session, allocation, EntryKind.expire, -left,
                                     key=f"expire:{allocation.id}", actor=actor,
                                     reason="the allocation's period is over")
            allocation.state = AllocationState.closed
            allocation.closed_at = now
            record(session, actor=actor, action="allocation.close", target_type="allocation",
                   target_id=allocation.id, member_id=allocation.member_id,
                   details={"expired_msu": left})
            backstop.mark_changed(session, allocation.member_id)
            if allocation not in changed:
                changed.append(allocation)
    session.flush()
    return changed


def refresh_alerts(session: Session, *, now: datetime | None = None) -> list[Alert]:
    """Re-evaluate every active allocation's alerts: a projection moves with time alone."""
    now = now or utcnow()
    ids = session.scalars(select(Allocation.id).where(Allocation.state == AllocationState.active)
                          .order_by(Allocation.id)).all()
    fired = []
    for allocation_id in ids:
        allocation = repository.lock_allocation(session, allocation_id)
        if allocation is not None and allocation.state == AllocationState.active:
            fired.extend(thresholds.evaluate(session, allocation, now))
    session.flush()
    return fired
