"""A job array's hold: tasks x one task's quote, shrinking by a task's share as each ends and
is charged (refunded after a node failure), settled when the last has ended; each task settled
once, and the books balance all along."""

from __future__ import annotations

from factories import make_member
from quota_helpers import HOUR, ONE_GPU, WEIGHTS, balance, give, job
from sqlalchemy import select
from sqlalchemy.orm import Session

from quotas import service
from quotas.ledger import verify
from quotas.models import EntryKind, HoldState, LedgerEntry


def ended(task_id: int, hours: float, state: str = "completed") -> service.TaskUse:
    return service.TaskUse(task_id, ONE_GPU, int(hours * HOUR), state)


def test_an_arrays_hold_shrinks_task_by_task_and_closes_with_the_last(
        session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 100)
    held = service.hold(session, job(member, "arr"), WEIGHTS, ONE_GPU, 2 * HOUR, tasks=4)
    assert held.amount_msu == 4 * 2000 == balance(session, allocation.id).held

    first = service.settle_tasks(session, "arr", WEIGHTS, [ended(0, 1), ended(1, 0.5)],
                                 share_msu=2000)
    assert first == {0: (1000, 0), 1: (500, 0)}
    assert (held.amount_msu, held.state) == (4000, HoldState.open)
    assert balance(session, allocation.id).used == 1500
    # a retried settlement finds what was written and writes nothing
    again = service.settle_tasks(session, "arr", WEIGHTS, [ended(1, 9)], share_msu=2000)
    assert again == {1: (500, 0)}

    last = service.settle_tasks(session, "arr", WEIGHTS, [ended(2, 2, "node_fail"),
                                                          ended(3, 0, "cancelled")],
                                share_msu=2000)
    assert last == {2: (2000, 2000), 3: (0, 0)}
    closed = service.close_hold(session, "arr")
    assert (closed.charge_msu, closed.refund_msu) == (3500, 2000)
    assert closed.hold.state is HoldState.settled
    now = balance(session, allocation.id)
    assert (now.held, now.used, now.available) == (0, 1500, 98500)
    assert service.close_hold(session, "arr").charge_msu == 3500  # idempotent
    kinds = session.scalars(select(LedgerEntry.kind).where(LedgerEntry.job_id == "arr")).all()
    assert sorted(kinds).count(EntryKind.charge) == 4
    assert kinds.count(EntryKind.release) == 4  # one share per task; nothing was left
    assert verify(session) == []


def test_an_arrays_hold_released_before_all_ended_leaves_its_remainder_to_close(
        session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    service.hold(session, job(member, "arr2"), WEIGHTS, ONE_GPU, HOUR, tasks=3)

    service.settle_tasks(session, "arr2", WEIGHTS, [ended(0, 0.25)], share_msu=1000)
    assert balance(session, allocation.id).held == 2000
    service.close_hold(session, "arr2")

    assert balance(session, allocation.id).held == 0
    assert balance(session, allocation.id).used == 250
    assert verify(session) == []
