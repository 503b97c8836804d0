"""The Slurm backstop: limits recomputed from the ledger on grant, adjustment, refund and
expiry, pushed after commit through the sink, pending until a push succeeds."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from factories import make_member
from quota_fakes import FakeSink
from quota_helpers import give, hold_hours, settle_hours
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from gateway.db import Database
from quotas import backstop, service
from quotas.models import Hold, HoldState, LimitSync


def account_of(session: Session, member_id: int) -> str:
    from consortium.models import ClusterIdentity

    identity = session.query(ClusterIdentity).filter_by(member_id=member_id).one()
    return identity.slurm_account


def test_limit_is_granted_plus_margin_plus_past_charges_in_billing_minutes(
        session: Session) -> None:
    member = make_member(session)
    give(session, member, 100, overdraft_su=10)
    [target] = backstop.targets(session, member.id)
    # ceiling 110 SU, nothing used: 110 + 10 % of 110 = 121 SU
    assert target.limit_msu == 121_000
    hold_hours(session, member, "j1", 30)
    settle_hours(session, "j1", 20)
    [target] = backstop.targets(session, member.id)
    # 20 charged (Slurm counted them) + 90 remaining + 11 margin: a charge moves nothing
    assert target.limit_msu == 121_000


def test_refund_raises_the_limit_by_the_refunded_amount(session: Session) -> None:
    member = make_member(session)
    give(session, member, 100)
    hold_hours(session, member, "j1", 10)
    settle_hours(session, "j1", 10)
    before = backstop.targets(session, member.id)[0].limit_msu
    service.refund(session, member_id=member.id, job_id="j1", amount_msu=4000, reason="x",
                   actor="admin")
    assert backstop.targets(session, member.id)[0].limit_msu == before + 4000


def test_expiry_lowers_the_limit_to_what_was_used(session: Session) -> None:
    member = make_member(session)
    now = utcnow()
    give(session, member, 100, starts_at=now - timedelta(days=30),
         ends_at=now + timedelta(hours=2))
    hold_hours(session, member, "j1", 1)
    settle_hours(session, "j1", 1)
    service.advance_periods(session, now=now + timedelta(hours=3))
    [target] = backstop.targets(session, member.id)
    assert target.limit_msu == 1000  # only what Slurm already counted: nothing new starts


def test_billing_minutes_follow_the_clusters_billing_scale(fresh_database: Database) -> None:
    with fresh_database.transaction() as session:
        give(session, make_member(session), 10)
    in_su, in_msu = FakeSink(billing_scale=1), FakeSink(billing_scale=1000)
    [one] = asyncio.run(backstop.push(fresh_database.transaction, {"local": in_su},
                                      pending_only=False))
    [other] = asyncio.run(backstop.push(fresh_database.transaction, {"local": in_msu},
                                        pending_only=False))
    # 11 SU: 660 billing-minutes with weights in SU, 660 000 with weights in milli-SU
    assert (one.billing_minutes, other.billing_minutes) == (660, 660_000)
    assert list(in_msu.limits.values()) == [660_000]


def test_push_happens_after_commit_and_clears_the_outbox(fresh_database: Database) -> None:
    sink = FakeSink(fresh_database)
    with fresh_database.transaction() as session:
        member = make_member(session)
        give(session, member, 50)
        member_id, account = member.id, account_of(session, member.id)
    results = asyncio.run(backstop.push(fresh_database.transaction, {"local": sink}))
    assert [(r.target.account, r.applied_minutes, r.error) for r in results] == [
        (account, 3300, None)]
    assert sink.seen_committed == [True]
    with fresh_database.session() as session:
        sync = session.get(LimitSync, (member_id, "local"))
        assert sync is not None
        assert (sync.pushed_generation, sync.generation) == (1, 1)
        assert sync.pushed_billing_minutes == 3300
    # nothing pending any more: a second push does nothing
    assert asyncio.run(backstop.push(fresh_database.transaction, {"local": sink})) == []


def test_a_settlement_committed_while_the_push_reads_is_seen_whole_or_not_at_all(
        fresh_database: Database) -> None:
    """The tracker settles a job between the push's read of the balances and its read of the
    charges: a charge moves no limit, and the pushed limit must not move either (on
    PostgreSQL, read in one snapshot; on SQLite the push's read holds the writers' lock, and
    the settlement commits after it)."""
    sink = FakeSink()
    with fresh_database.transaction() as session:
        member = make_member(session)
        give(session, member, 100, overdraft_su=10)
        hold_hours(session, member, "j1", 30)
    settling: list[threading.Thread] = []

    def settle() -> None:
        with fresh_database.transaction() as other:
            settle_hours(other, "j1", 20)

    def settle_once(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if not settling and "FROM allocations" in statement:
            settling.append(threading.Thread(target=settle))
            settling[0].start()
            settling[0].join(timeout=10 if fresh_database.dialect == "postgresql" else 0)

    event.listen(fresh_database.engine, "after_cursor_execute", settle_once)
    try:
        [pushed] = asyncio.run(backstop.push(fresh_database.transaction, {"local": sink},
                                             pending_only=False))
    finally:
        event.remove(fresh_database.engine, "after_cursor_execute", settle_once)
        for thread in settling:
            thread.join(timeout=30)
    # 110 SU of ceiling + 11 of margin, 20 charged or not: 121 SU, 7260 billing-minutes
    assert pushed.billing_minutes == 7260
    with fresh_database.session() as session:
        held = session.scalars(select(Hold).where(Hold.job_id == "j1")).one()
        assert held.state == HoldState.settled  # it did settle meanwhile
        assert backstop.targets(session, member.id)[0].limit_msu == 121_000


def test_a_failed_push_stays_pending_with_its_error(fresh_database: Database) -> None:
    sink = FakeSink()
    sink.failing = True
    with fresh_database.transaction() as session:
        member = make_member(session)
        give(session, member, 50)
        member_id = member.id
    [result] = asyncio.run(backstop.push(fresh_database.transaction, {"local": sink}))
    assert result.error == "sacctmgr: connection refused"
    with fresh_database.session() as session:
        sync = session.get(LimitSync, (member_id, "local"))
        assert sync is not None and sync.pushed_generation == 0
        assert sync.last_error == "sacctmgr: connection refused"
    sink.failing = False
    [result] = asyncio.run(backstop.push(fresh_database.transaction, {"local": sink}))
    assert result.error is None and sink.limits


def test_drift_compares_ledger_charges_and_limits_with_slurm(fresh_database: Database) -> None:
    sink = FakeSink()
    with fresh_database.transaction() as session:
        member = make_member(session)
        give(session, member, 10)
        hold_hours(session, member, "j1", 2)
        settle_hours(session, "j1", 2)
        account = account_of(session, member.id)
    asyncio.run(backstop.push(fresh_database.transaction, {"local": sink}))
    sink.used[account] = 150  # 2 SU charged = 120 billing-minutes; Slurm saw 30 more
    sink.limits[account] -= 60  # and someone lowered the limit by hand
    [line] = asyncio.run(backstop.drift(fresh_database.transaction, {"local": sink}))
    assert (line.wanted_minutes, line.ledger_charged_minutes) == (660, 120)
    assert (line.usage_drift, line.limit_drift) == (30, -60)
    [line] = asyncio.run(backstop.drift(fresh_database.transaction, {}))
    assert line.error == "no such cluster in the configuration"
    # a cluster without Slurm accounting (the local backend) has nothing to compare
    assert asyncio.run(backstop.drift(fresh_database.transaction, {"local": None})) == []


def test_clusters_without_slurm_accounting_are_skipped_and_cleared(
        fresh_database: Database) -> None:
    with fresh_database.transaction() as session:
        member = make_member(session)
        give(session, member, 10)
    [result] = asyncio.run(backstop.push(fresh_database.transaction, {"local": None}))
    assert result.skipped and result.error is None
    assert asyncio.run(backstop.push(fresh_database.transaction, {"local": None})) == []
