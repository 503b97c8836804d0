"""Usage alerts: 50/80/90/100 % of an allocation used, and exhaustion projected before its end.

Each fires once per allocation (a unique constraint backs the check) and is stored; mail goes
out after the transaction that fired it has committed (`deliver`), never inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.mail import MailError, SmtpConfig, send_mail
from consortium.models import Member, Membership, Role, User
from quotas import repository
from quotas.models import Alert, AlertKind, Allocation, AllocationState
from quotas.rates import format_su

USED_LEVELS = (
    (50, AlertKind.used_50),
    (80, AlertKind.used_80),
    (90, AlertKind.used_90),
    (100, AlertKind.used_100),
)
# the projection that fires an alert uses the last week's pace: responsive, and a single big
# job early in a period counts over a full week rather than over the few hours it took
PROJECTION_WINDOW = timedelta(days=7)
DELIVERY_BATCH = 100

Transaction = Callable[[], AbstractContextManager[Session]]

# told of newly fired alerts inside the transaction that fires them (the gateway's webhooks
# add their outbox rows there); a listener must only add rows to the session
AlertListener = Callable[[Session, Sequence[Alert]], None]
_alert_listeners: list[AlertListener] = []


def on_alerts(listener: AlertListener) -> AlertListener:
    if listener not in _alert_listeners:
        _alert_listeners.append(listener)
    return listener


def burn_per_day(used_msu: int, window: timedelta) -> Fraction:
    return Fraction(used_msu) / Fraction(window.total_seconds() / 86400)


# beyond this the projection says nothing useful (and a tiny pace would overflow datetime)
PROJECTION_HORIZON_DAYS = 36_500


def projected_exhaustion(available_msu: int, per_day: Fraction,
                         now: datetime) -> datetime | None:
    """When `available` reaches zero at this pace; None when nothing is being used or the date
    lies past the horizon."""
    if per_day <= 0:
        return None
    if available_msu <= 0:
        return now
    days = Fraction(available_msu) / per_day
    if days > PROJECTION_HORIZON_DAYS:
        return None
    return now + timedelta(days=float(days))


def evaluate(session: Session, allocation: Allocation, now: datetime | None = None) -> list[Alert]:
    """Fire the alerts this allocation has newly crossed (call with its row locked)."""
    now = now or utcnow()
    fired = set(session.scalars(select(Alert.kind).where(Alert.allocation_id == allocation.id)))
    new: list[Alert] = []

    def fire(kind: AlertKind, projected: datetime | None = None) -> None:
        new.append(Alert(allocation_id=allocation.id, member_id=allocation.member_id, kind=kind,
                         fired_at=now, granted_msu=allocation.granted_msu,
                         used_msu=allocation.used_msu, projected_exhaustion_at=projected))

    if allocation.granted_msu > 0:
        for percent, kind in USED_LEVELS:
            if kind not in fired and allocation.used_msu * 100 >= percent * allocation.granted_msu:
                fire(kind)
    if AlertKind.exhaustion not in fired and allocation.state == AllocationState.active:
        used = repository.used_since(session, now - PROJECTION_WINDOW,
                                     allocation_ids=[allocation.id])
        projected = projected_exhaustion(allocation.available_msu,
                                         burn_per_day(used, PROJECTION_WINDOW), now)
        if projected is not None and projected < allocation.ends_at:
            fire(AlertKind.exhaustion, projected)
    session.add_all(new)
    if new:
        for listener in list(_alert_listeners):
            listener(session, new)
    return new


@dataclass(frozen=True)
class _Message:
    alert_id: int
    to: str
    subject: str
    body: str


def describe(alert: Alert) -> str:
    if alert.kind == AlertKind.exhaustion and alert.projected_exhaustion_at is not None:
        return (f"at the last 7 days' pace, allocation #{alert.allocation_id} runs out on "
                f"{alert.projected_exhaustion_at:%Y-%m-%d}, before its period ends")
    percent = alert.kind.removeprefix("used_")
    return (f"allocation #{alert.allocation_id} is {percent} % used: "
            f"{format_su(alert.used_msu)} of {format_su(alert.granted_msu)}")


def _recipients(session: Session, member: Member) -> list[str]:
    managers = session.scalars(
        select(User.email).join(Membership, Membership.user_id == User.id)
        .where(Membership.member_id == member.id, Membership.role == Role.manager,
               User.is_active.is_(True))
        .order_by(User.email)
    )
    emails = [member.contact_email, *managers]
    return list(dict.fromkeys(e for e in emails if e))


def deliver(transaction: Transaction, smtp: SmtpConfig, *, now: datetime | None = None) -> int:
    """Mail the alerts not mailed yet; returns how many went out.

    Each alert is claimed (mailed_at set) in a committed transaction before it is sent, so two
    replicas never mail the same alert; a failed send gives the claim back with its error.
    """
    now = now or utcnow()
    messages: list[_Message] = []
    with transaction() as session:
        alerts = session.scalars(select(Alert).where(Alert.mailed_at.is_(None))
                                 .order_by(Alert.id).limit(DELIVERY_BATCH)).all()
        for alert in alerts:
            claim = session.execute(update(Alert).where(Alert.id == alert.id,
                                                        Alert.mailed_at.is_(None))
                                    .values(mailed_at=now))
            member = session.get(Member, alert.member_id)
            to = _recipients(session, member) if member else []
            if cast(CursorResult[Any], claim).rowcount != 1 or member is None or not to:
                continue  # another replica has it, or nobody to tell
            messages.append(_Message(alert.id, ", ".join(to),
                                     f"[hpcgw] {member.name}: quota alert", describe(alert)
                                     + "\n\nDetails: GET /api/v1/members/"
                                     f"{member.id}/usage and /alerts.\n"))
    sent = 0
    errors: dict[int, str] = {}
    for message in messages:
        try:
            send_mail(smtp, to=message.to, subject=message.subject, body=message.body)
            sent += 1
        except MailError as exc:
            errors[message.alert_id] = str(exc)
    if errors:
        with transaction() as session:
            for alert_id, error in errors.items():
                session.execute(update(Alert).where(Alert.id == alert_id)
                                .values(mailed_at=None, mail_error=error))
    return sent
