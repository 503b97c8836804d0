"""Which allocation a hold draws on, what a refusal says, and allocation periods: active,
settling (charges still land, no new holds), closed (what is left expires)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from factories import make_member, make_project
from quota_helpers import (
    HOUR,
    ONE_GPU,
    WEIGHTS,
    audit,
    balance,
    give,
    hold_hours,
    job,
    settle_hours,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consortium.base import utcnow
from quotas import service
from quotas.errors import QuotaExceeded
from quotas.models import AllocationState, EntryKind, LedgerEntry


def test_refusal_carries_requested_available_and_held(session: Session) -> None:
    member = make_member(session)
    give(session, member, 10)
    hold_hours(session, member, "a", 4)
    hold_hours(session, member, "b", 4.5)
    with pytest.raises(QuotaExceeded) as refused:
        hold_hours(session, member, "c", 2)
    error = refused.value
    assert (error.requested_msu, error.available_msu, error.held_msu, error.open_holds) == (
        2000, 1500, 8500, 2)
    assert error.detail == ("requested 2.000 SU, available 1.500 SU, held 8.500 SU by 2 "
                            "pending or running job(s)")
    assert error.extra["available_su"] == "1.500"


def test_a_member_without_allocation_holds_nothing(session: Session) -> None:
    member = make_member(session)
    with pytest.raises(QuotaExceeded) as refused:
        hold_hours(session, member, "a", 1)
    assert refused.value.available_msu == 0


def test_a_project_draws_on_its_earmarked_allocation_first(session: Session) -> None:
    member = make_member(session)
    vision, speech = make_project(session, member), make_project(session, member)
    general = give(session, member, 100)
    earmarked = give(session, member, 10, project=vision)
    assert hold_hours(session, member, "v1", 6, project=vision).allocation_id == earmarked.id
    assert hold_hours(session, member, "s1", 6, project=speech).allocation_id == general.id
    # the earmarked hours are not enough any more: the general ones take over
    assert hold_hours(session, member, "v2", 6, project=vision).allocation_id == general.id


def test_another_projects_earmarked_hours_are_not_usable(session: Session) -> None:
    member = make_member(session)
    vision, speech = make_project(session, member), make_project(session, member)
    give(session, member, 50, project=vision)
    with pytest.raises(QuotaExceeded):
        hold_hours(session, member, "s1", 1, project=speech)


def test_a_hold_must_also_fit_the_member_as_a_whole(session: Session) -> None:
    member = make_member(session)
    vision = make_project(session, member)
    general = give(session, member, 10)
    give(session, member, 10, project=vision)
    hold_hours(session, member, "a", 2)
    settle_hours(session, "a", 8)  # charged beyond its hold: the general allocation is at 2
    hold_hours(session, member, "b", 2)
    settle_hours(session, "b", 7)  # now at -5
    assert balance(session, general.id).available == -5000
    # the project's 10 SU are there, but the member as a whole has 5 left
    with pytest.raises(QuotaExceeded) as refused:
        hold_hours(session, member, "v1", 6, project=vision)
    assert refused.value.available_msu == 5000
    hold_hours(session, member, "v2", 5, project=vision)


def test_hours_that_expire_first_are_used_first(session: Session) -> None:
    member = make_member(session)
    now = utcnow()
    later = give(session, member, 10, ends_at=now + timedelta(days=300))
    sooner = give(session, member, 10, ends_at=now + timedelta(days=20))
    assert hold_hours(session, member, "a", 8).allocation_id == sooner.id
    assert hold_hours(session, member, "b", 8).allocation_id == later.id
    with pytest.raises(QuotaExceeded):  # 4 left in all, but never split over two allocations
        hold_hours(session, member, "c", 3)


def test_overdraft_lets_holds_go_below_zero_up_to_it(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10, overdraft_su=2)
    hold_hours(session, member, "a", 11.5)
    assert balance(session, allocation.id).available == 500
    with pytest.raises(QuotaExceeded):
        hold_hours(session, member, "b", 1)


def test_allocations_outside_their_period_take_no_holds(session: Session) -> None:
    member = make_member(session)
    now = utcnow()
    give(session, member, 10, starts_at=now + timedelta(days=1), ends_at=now + timedelta(days=9))
    give(session, member, 10, starts_at=now - timedelta(days=9), ends_at=now - timedelta(hours=1))
    with pytest.raises(QuotaExceeded):
        hold_hours(session, member, "a", 1)


def test_period_end_settles_then_closes_with_an_expire_entry(session: Session) -> None:
    member = make_member(session)
    now = utcnow()
    allocation = give(session, member, 10, overdraft_su=1, starts_at=now - timedelta(days=30),
                      ends_at=now + timedelta(hours=1))
    hold_hours(session, member, "running", 3)
    later = now + timedelta(hours=2)
    assert service.advance_periods(session, now=later) == [allocation]
    assert allocation.state == AllocationState.settling
    with pytest.raises(QuotaExceeded):  # no new holds on a settling allocation
        hold_hours(session, member, "new", 1)
    service.advance_periods(session, now=later)
    assert allocation.state == AllocationState.settling  # a hold is still open on it
    settle_hours(session, "running", 2.5)  # its charge still lands there
    service.advance_periods(session, now=later)
    assert allocation.state == AllocationState.closed
    [expire] = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.expire))
    assert expire.amount_msu == -7500  # what was left; the overdraft is not expired
    assert balance(session, allocation.id) == (10_000, 2500, 0, 0)
    assert [e.action for e in audit(session, "allocation.close")] == ["allocation.close"]


def test_a_debt_is_not_expired(session: Session) -> None:
    member = make_member(session)
    now = utcnow()
    allocation = give(session, member, 10, overdraft_su=5, starts_at=now - timedelta(days=30),
                      ends_at=now + timedelta(hours=1))
    hold_hours(session, member, "a", 14)
    settle_hours(session, "a", 14)
    service.advance_periods(session, now=now + timedelta(hours=2))
    assert allocation.state == AllocationState.closed
    assert balance(session, allocation.id).available == -4000
    assert not session.scalars(select(LedgerEntry).where(
        LedgerEntry.kind == EntryKind.expire)).all()


def test_holding_again_for_a_job_returns_its_first_hold(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10)
    first = hold_hours(session, member, "j1", 1)
    assert hold_hours(session, member, "j1", 1) is first
    assert balance(session, allocation.id).held == 1000


def test_a_new_jobs_hold_skips_the_read_but_a_second_one_is_still_refused(
        session: Session) -> None:
    """`new_job` skips the idempotency read; the unique job id of holds still refuses a
    second hold, and nothing of it is written."""
    member = make_member(session)
    allocation = give(session, member, 10)
    service.hold(session, job(member, "j1"), WEIGHTS, ONE_GPU, HOUR, new_job=True)
    with pytest.raises(IntegrityError), session.begin_nested():
        service.hold(session, job(member, "j1"), WEIGHTS, ONE_GPU, HOUR, new_job=True)
    assert balance(session, allocation.id).held == 1000
