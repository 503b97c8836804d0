"""The ledger: every balance move has its entry, settlements are idempotent, entries are
append-only at the database, and `verify` catches a balance that no longer matches."""

from __future__ import annotations

import pytest
from factories import make_member, make_project, make_user
from quota_helpers import (
    HOUR,
    ONE_GPU,
    WEIGHTS,
    audit,
    balance,
    entries_total,
    give,
    hold_hours,
    job,
    settle_hours,
)
from sqlalchemy import delete, event, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from consortium.errors import Conflict, InvalidInput, NotFound
from gateway.db import Database
from quotas import ledger, service
from quotas.models import (
    Allocation,
    AllocationKind,
    EntryKind,
    HoldState,
    LedgerEntry,
    LimitSync,
)
from quotas.rates import Amounts, price


def kinds(session: Session, allocation_id: int) -> list[tuple[EntryKind, int]]:
    return [(e.kind, e.amount_msu) for e in session.scalars(
        select(LedgerEntry).where(LedgerEntry.allocation_id == allocation_id)
        .order_by(LedgerEntry.id))]


def test_grant_writes_a_grant_entry_the_balance_and_an_audit_event(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 100, overdraft_su=5, kind=AllocationKind.purchase)
    assert kinds(session, allocation.id) == [(EntryKind.grant, 100_000)]
    assert balance(session, allocation.id).available == 105_000
    [event] = audit(session, "allocation.grant")
    assert event.member_id == member.id and event.details["amount_msu"] == 100_000


def test_grant_refuses_a_project_of_another_member_and_an_empty_period(session: Session) -> None:
    member, other = make_member(session), make_member(session)
    with pytest.raises(InvalidInput):
        give(session, member, 10, project=make_project(session, other))
    start, _ = (a := give(session, member, 1)).starts_at, a.ends_at
    with pytest.raises(InvalidInput):
        give(session, member, 10, starts_at=start, ends_at=start)


def test_hold_records_project_user_and_partition_and_reserves_the_quote(
        session: Session) -> None:
    member = make_member(session)
    project, user = make_project(session, member), make_user(session)
    allocation = give(session, member, 10)
    hold = hold_hours(session, member, 1, 3, project=project, user=user, partition="a100")
    assert hold.amount_msu == 3000 and hold.allocation_id == allocation.id
    [entry] = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.hold))
    assert (entry.amount_msu, entry.project_id, entry.user_id, entry.partition, entry.job_id) == (
        -3000, project.id, user.id, "a100", "1")
    assert balance(session, allocation.id) == (10_000, 0, 3000, 7000)


def test_settle_charges_allocated_resources_times_elapsed_and_releases_the_hold(
        session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 4)
    allocated = Amounts(gpus=2, cpus=8, mem_mb=4096)  # more than asked: 2 SU per hour
    result = service.settle(session, "j1", WEIGHTS, allocated, 90 * 60, state="completed")
    assert result.charge_msu == price(WEIGHTS, allocated, 90 * 60) == 3000
    assert kinds(session, allocation.id) == [
        (EntryKind.grant, 10_000), (EntryKind.hold, -4000), (EntryKind.release, 4000),
        (EntryKind.charge, -3000)]
    assert balance(session, allocation.id) == (10_000, 3000, 0, 7000)
    assert entries_total(session, allocation.id) == balance(session, allocation.id).available


def test_settling_twice_charges_once(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 2)
    first = settle_hours(session, "j1", 1)
    again = settle_hours(session, "j1", 1.5)  # a retried settlement with other figures
    assert (first.charge_msu, again.charge_msu) == (1000, 1000)
    assert [k for k, _ in kinds(session, allocation.id)].count(EntryKind.charge) == 1
    assert balance(session, allocation.id).used == 1000


def test_a_second_entry_with_the_same_idempotency_key_is_refused_by_the_database(
        session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 1)
    settle_hours(session, "j1", 1)
    session.add(LedgerEntry(allocation_id=allocation.id, member_id=member.id,
                            kind=EntryKind.charge, amount_msu=-1000, actor="bug",
                            idempotency_key="charge:j1"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_release_gives_the_hold_back_once(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 6)
    service.release(session, "j1", reason="sbatch failed")
    service.release(session, "j1")
    assert kinds(session, allocation.id)[1:] == [(EntryKind.hold, -6000),
                                                 (EntryKind.release, 6000)]
    assert balance(session, allocation.id) == (10_000, 0, 0, 10_000)


def test_a_released_job_that_turns_out_to_have_run_is_still_charged(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 2)
    service.release(session, "j1")
    settle_hours(session, "j1", 1)
    assert balance(session, allocation.id) == (10_000, 1000, 0, 9000)
    assert [k for k, _ in kinds(session, allocation.id)].count(EntryKind.release) == 1


def test_node_failure_is_refunded_automatically_and_raises_the_slurm_limit(
        session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 2)
    generation = session.get(LimitSync, (member.id, "local"), populate_existing=True).generation
    result = settle_hours(session, "j1", 1.5, state="node_fail")
    assert (result.charge_msu, result.refund_msu) == (1500, 1500)
    assert kinds(session, allocation.id)[-2:] == [(EntryKind.charge, -1500),
                                                  (EntryKind.refund, 1500)]
    assert balance(session, allocation.id) == (10_000, 0, 0, 10_000)
    sync = session.get(LimitSync, (member.id, "local"), populate_existing=True)
    assert sync.generation == generation + 1


def test_timeout_and_out_of_memory_are_not_refunded(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    for job_id, state in (("a", "timeout"), ("b", "out_of_memory"), ("c", "failed")):
        hold_hours(session, member, job_id, 1)
        assert settle_hours(session, job_id, 1, state=state).refund_msu == 0
    assert balance(session, allocation.id).used == 3000


def test_admin_refunds_part_of_a_charge_with_a_reason_audited(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 4)
    settle_hours(session, "j1", 4)
    with pytest.raises(InvalidInput):
        service.refund(session, member_id=member.id, job_id="j1", reason=" ",
                       actor="admin@consortium.test")
    entry = service.refund(session, member_id=member.id, job_id="j1", amount_msu=1500,
                           reason="maintenance killed it", actor="admin@consortium.test",
                           idempotency_key="r1")
    again = service.refund(session, member_id=member.id, job_id="j1", amount_msu=1500,
                           reason="maintenance killed it", actor="admin@consortium.test",
                           idempotency_key="r1")
    assert again.id == entry.id and entry.amount_msu == 1500
    assert balance(session, allocation.id).used == 2500
    with pytest.raises(InvalidInput, match=r"2\.500 SU"):
        service.refund(session, member_id=member.id, job_id="j1", amount_msu=2501,
                       reason="too much", actor="admin@consortium.test")
    [event] = audit(session, "quota.refund")
    assert event.details == {"job_id": "j1", "amount_msu": 1500,
                             "reason": "maintenance killed it"}


def test_a_refund_names_a_job_of_that_member(session: Session) -> None:
    member, other = make_member(session), make_member(session)
    give(session, member, 10)
    hold_hours(session, member, "j1", 1)
    settle_hours(session, "j1", 1)
    with pytest.raises(NotFound):
        service.refund(session, member_id=other.id, job_id="j1", reason="x", actor="admin")
    with pytest.raises(NotFound):
        service.refund(session, member_id=member.id, job_id="nope", reason="x", actor="admin")


def test_adjustment_moves_granted_with_a_reason_and_never_below_zero(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    service.adjust(session, member_id=member.id, allocation_id=allocation.id,
                   amount_msu=-4000, reason="granted too much", actor="admin")
    service.adjust(session, member_id=member.id, allocation_id=allocation.id,
                   amount_msu=500, reason="goodwill", actor="admin")
    assert balance(session, allocation.id).granted == 6500
    with pytest.raises(InvalidInput):
        service.adjust(session, member_id=member.id, allocation_id=allocation.id,
                       amount_msu=-7000, reason="more than granted", actor="admin")
    with pytest.raises(NotFound):
        service.adjust(session, member_id=make_member(session).id, allocation_id=allocation.id,
                       amount_msu=1, reason="wrong member", actor="admin")
    assert len(audit(session, "allocation.adjust")) == 2


def test_the_same_job_id_cannot_hold_for_two_members(session: Session) -> None:
    member, other = make_member(session), make_member(session)
    give(session, member, 10)
    give(session, other, 10)
    first = hold_hours(session, member, "j1", 1)
    assert hold_hours(session, member, "j1", 1).id == first.id  # a retried hold
    with pytest.raises(Conflict):
        hold_hours(session, other, "j1", 1)


def test_ledger_entries_cannot_be_updated_or_deleted(session: Session) -> None:
    member = make_member(session)
    give(session, member, 10)
    for statement in (update(LedgerEntry).values(amount_msu=1),
                      delete(LedgerEntry)):
        with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
            session.execute(statement)


def test_verify_finds_nothing_when_the_books_balance(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 2)
    hold_hours(session, member, "j2", 1)
    settle_hours(session, "j1", 1, state="node_fail")
    service.adjust(session, member_id=member.id, allocation_id=allocation.id, amount_msu=7,
                   reason="x", actor="admin")
    assert ledger.verify(session) == []


def test_verify_catches_a_tampered_balance_row(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    hold_hours(session, member, "j1", 2)
    session.flush()
    session.execute(text("UPDATE allocations SET granted_msu = granted_msu + 50000, "
                         "held_msu = 0 WHERE id = :id"), {"id": allocation.id})
    drifts = {(d.column, d.source): (d.stored_msu, d.expected_msu)
              for d in ledger.verify(session)}
    assert drifts == {("granted_msu", "entries"): (60_000, 10_000),
                      ("held_msu", "entries"): (0, 2000),
                      ("held_msu", "open holds"): (0, 2000)}


def test_verify_reads_the_books_in_one_snapshot_while_a_job_settles(
        fresh_database: Database) -> None:
    """An admin verifies while the tracker settles a job: the settlement commits after
    verify's first statement, and verify still reads entries, holds and balances of one
    moment (on PostgreSQL, each statement of a transaction sees its own snapshot)."""
    with fresh_database.transaction() as session:
        member = make_member(session)
        give(session, member, 10)
        hold_hours(session, member, "j1", 2)
    engine = fresh_database.engine
    settled: list[int] = []

    def settle_once(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if not settled and statement.startswith("SELECT") and "ledger_entries" in statement:
            settled.append(0)  # before settling: its own reads must not settle again
            with fresh_database.transaction() as other:
                settled[0] = settle_hours(other, "j1", 1).charge_msu

    event.listen(engine, "after_cursor_execute", settle_once)
    try:
        with fresh_database.session() as verifying:
            assert ledger.verify(verifying) == []
    finally:
        event.remove(engine, "after_cursor_execute", settle_once)
    assert settled == [1000]  # it did settle in the middle
    with fresh_database.session() as session:
        assert ledger.verify(session) == []
        assert ledger.verification(session).entries == 4  # grant, hold, release, charge


def test_hold_reads_balance_rows_and_never_the_ledger(session: Session) -> None:
    member = make_member(session)
    give(session, member, 10)
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        service.hold(session, job(member, "j1"), WEIGHTS, ONE_GPU, HOUR)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    ledger_statements = [s for s in statements if "ledger_entries" in s]
    assert len(ledger_statements) == 1 and ledger_statements[0].startswith("INSERT")


def test_settlements_hold_states_follow_the_job(session: Session) -> None:
    member = make_member(session)
    give(session, member, 10)
    assert hold_hours(session, member, "a", 1).state == HoldState.open
    assert settle_hours(session, "a", 1).hold.state == HoldState.settled
    with pytest.raises(NotFound):
        settle_hours(session, "never-held", 1)
    assert session.scalar(select(Allocation.held_msu)) == 0
