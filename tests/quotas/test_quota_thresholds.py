"""Usage alerts: each threshold once per allocation, exhaustion projected before the end,
mailed after commit through a real SMTP server on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from factories import make_member, make_user
from quota_helpers import give, hold_hours, settle_hours
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import Role
from gateway.db import Database
from gateway.settings import SmtpSettings
from quotas import service, thresholds
from quotas.models import Alert, AlertKind


def fired(session: Session, allocation_id: int) -> list[AlertKind]:
    return list(session.scalars(select(Alert.kind).where(Alert.allocation_id == allocation_id)
                                .order_by(Alert.id)))


def test_each_usage_threshold_fires_once_per_allocation(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 100)
    hold_hours(session, member, "a", 55)
    settle_hours(session, "a", 55)
    assert fired(session, allocation.id)[:1] == [AlertKind.used_50]
    hold_hours(session, member, "b", 40)
    settle_hours(session, "b", 40)  # 95 %: 80 and 90 at once
    service.adjust(session, member_id=member.id, allocation_id=allocation.id, amount_msu=100_000,
                   reason="supplement", actor="admin")  # back to 47.5 %
    hold_hours(session, member, "c", 10)
    settle_hours(session, "c", 10)  # 52.5 %: 50 crossed again, not fired again
    kinds = [k for k in fired(session, allocation.id) if k != AlertKind.exhaustion]
    assert kinds == [AlertKind.used_50, AlertKind.used_80, AlertKind.used_90]


def test_hundred_percent_fires_when_used_reaches_granted(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 10, overdraft_su=5)
    hold_hours(session, member, "a", 12)
    settle_hours(session, "a", 12)
    assert AlertKind.used_100 in fired(session, allocation.id)


def test_exhaustion_is_projected_from_the_last_weeks_pace(session: Session) -> None:
    member = make_member(session)
    now = utcnow()
    # 70 SU, 60 days left; 14 SU used in the last week = 2 SU/day: out in 28 days
    allocation = give(session, member, 70, starts_at=now - timedelta(days=5),
                      ends_at=now + timedelta(days=60))
    hold_hours(session, member, "a", 14)
    settle_hours(session, "a", 14)
    [alert] = session.scalars(select(Alert).where(
        Alert.allocation_id == allocation.id, Alert.kind == AlertKind.exhaustion)).all()
    assert alert.projected_exhaustion_at is not None
    assert abs(alert.projected_exhaustion_at - (now + timedelta(days=28))) < timedelta(hours=1)


def test_no_exhaustion_alert_when_the_pace_lasts_beyond_the_period(session: Session) -> None:
    member = make_member(session)
    allocation = give(session, member, 1000)
    hold_hours(session, member, "a", 7)
    settle_hours(session, "a", 7)  # 1 SU/day for 993 SU: years
    assert fired(session, allocation.id) == []


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, SmtpSettings]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, SmtpSettings(host="127.0.0.1", port=port, starttls=False,
                                  sender="hpcgw@consortium.test", timeout=5)
    finally:
        controller.stop()


def test_alerts_are_mailed_once_to_the_contact_and_managers(
        fresh_database: Database, smtp_server: tuple[Inbox, SmtpSettings]) -> None:
    inbox, smtp = smtp_server
    with fresh_database.transaction() as session:
        member = make_member(session, "mailco")
        make_user(session, email="boss@mailco.test", roles={member: Role.manager})
        make_user(session, email="intern@mailco.test", roles={member: Role.viewer})
        give(session, member, 10)
        hold_hours(session, member, "a", 6)
        settle_hours(session, "a", 6)
    assert thresholds.deliver(fresh_database.transaction, smtp) >= 1
    assert thresholds.deliver(fresh_database.transaction, smtp) == 0
    recipients = {tuple(sorted(to)) for to, _ in inbox.messages}
    assert recipients == {("boss@mailco.test", "ops@mailco.test")}
    assert any("is 50 % used: 6.000 SU of 10.000 SU" in body for _, body in inbox.messages)
    with fresh_database.session() as session:
        assert all(a.mailed_at is not None for a in session.scalars(select(Alert)))


def test_a_failed_mail_is_given_back_with_its_error(fresh_database: Database) -> None:
    with fresh_database.transaction() as session:
        member = make_member(session)
        give(session, member, 10)
        hold_hours(session, member, "a", 6)
        settle_hours(session, "a", 6)
    closed_port = SmtpSettings(host="127.0.0.1", port=_free_port(), starttls=False, timeout=2)
    assert thresholds.deliver(fresh_database.transaction, closed_port) == 0
    with fresh_database.session() as session:
        alert = session.scalars(select(Alert)).first()
        assert alert is not None and alert.mailed_at is None
        assert alert.mail_error and "Connection refused" in alert.mail_error


def test_a_pace_too_slow_to_matter_projects_no_exhaustion_instead_of_overflowing() -> None:
    from fractions import Fraction

    from quotas.thresholds import projected_exhaustion

    # 2000 SU left, 1 milli-SU used in a week: billions of days away, past datetime's range
    assert projected_exhaustion(2_000_000_000, Fraction(1, 7), utcnow()) is None
    soon = projected_exhaustion(700, Fraction(100), utcnow())
    assert soon is not None and soon - utcnow() < timedelta(days=8)
