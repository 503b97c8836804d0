"""Tables of the quotas: allocations with their balance, holds, the ledger, alerts, Slurm sync.

An allocation row is also its balance row (granted, charged, refunded, held, expired), updated
in the same transaction as the ledger entries that move it; `hpcgw admin ledger verify` checks
that every balance still equals the sum of its entries. Jobs are known by their id only.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from consortium.base import Base, BigIntPK, UTCDateTime, enum_column, utcnow


class AllocationKind(StrEnum):
    grant = "grant"
    purchase = "purchase"
    supplement = "supplement"


class AllocationState(StrEnum):
    """active: takes holds within its period. settling: the period is over, no new holds, the
    charges of jobs that held on it still land. closed: no hold left open, the rest expired."""

    active = "active"
    settling = "settling"
    closed = "closed"


class EntryKind(StrEnum):
    grant = "grant"
    hold = "hold"
    release = "release"
    charge = "charge"
    refund = "refund"
    adjust = "adjust"
    expire = "expire"


class HoldState(StrEnum):
    open = "open"
    settled = "settled"
    released = "released"


class Allocation(Base):
    __tablename__ = "allocations"
    __table_args__ = (
        Index("ix_allocations_member_id_state", "member_id", "state"),
        CheckConstraint("ends_at > starts_at", name="period"),
        CheckConstraint("overdraft_msu >= 0", name="overdraft"),
        CheckConstraint("held_msu >= 0", name="held"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="RESTRICT"))
    # earmarked: only jobs of this project draw on it
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    kind: Mapped[AllocationKind] = mapped_column(enum_column(AllocationKind, "allocation_kind"))
    state: Mapped[AllocationState] = mapped_column(
        enum_column(AllocationState, "allocation_state"), default=AllocationState.active
    )
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    overdraft_msu: Mapped[int] = mapped_column(BigInteger, default=0)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the balance: each column is the (sign-corrected) sum of one or two kinds of entries
    granted_msu: Mapped[int] = mapped_column(BigInteger, default=0)  # grant + adjust
    charged_msu: Mapped[int] = mapped_column(BigInteger, default=0)  # -charge
    refunded_msu: Mapped[int] = mapped_column(BigInteger, default=0)  # refund
    held_msu: Mapped[int] = mapped_column(BigInteger, default=0)  # -(hold + release)
    expired_msu: Mapped[int] = mapped_column(BigInteger, default=0)  # -expire

    @property
    def used_msu(self) -> int:
        return self.charged_msu - self.refunded_msu

    @property
    def available_msu(self) -> int:
        """What new holds may still take: granted + overdraft - used - held (- expired)."""
        overdraft = 0 if self.state == AllocationState.closed else self.overdraft_msu
        return self.granted_msu + overdraft - self.used_msu - self.held_msu - self.expired_msu

    def in_period(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


class Hold(Base):
    """A job's reservation on one allocation, from submit until it is settled or released."""

    __tablename__ = "quota_holds"
    __table_args__ = (
        Index("ix_quota_holds_member_id_state", "member_id", "state"),
        Index("ix_quota_holds_allocation_id_state", "allocation_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id", ondelete="RESTRICT"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="RESTRICT"))
    project_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    cluster: Mapped[str] = mapped_column(String(64))
    partition: Mapped[str] = mapped_column(String(64))
    # what it holds while open: a job array's hold shrinks by each task's share as it ends
    amount_msu: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[HoldState] = mapped_column(enum_column(HoldState, "hold_state"),
                                             default=HoldState.open)
    charged_msu: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_msu: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LedgerEntry(Base):
    """Append-only (the migration adds triggers refusing UPDATE and DELETE).

    `amount_msu` is signed by its effect on what the allocation has left: grant, release and
    refund are positive; hold, charge and expire negative; adjust either. So an allocation's
    available amount is overdraft + the sum of its entries. The idempotency key is unique:
    a retried settlement or grant finds its entry instead of writing a second one.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_member_id_id", "member_id", "id"),
        Index("ix_ledger_entries_member_id_at", "member_id", "at"),
        Index("ix_ledger_entries_allocation_id_at", "allocation_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id", ondelete="RESTRICT"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="RESTRICT"))
    kind: Mapped[EntryKind] = mapped_column(enum_column(EntryKind, "ledger_entry_kind"))
    amount_msu: Mapped[int] = mapped_column(BigInteger)
    # no foreign keys below: an entry outlives the project, user or job it names
    project_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    cluster: Mapped[str | None] = mapped_column(String(64))
    partition: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(320))
    actor_user_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)


class AlertKind(StrEnum):
    used_50 = "used_50"
    used_80 = "used_80"
    used_90 = "used_90"
    used_100 = "used_100"
    exhaustion = "exhaustion"  # projected to run out before the period ends


class Alert(Base):
    """A threshold crossed by an allocation: fired once (unique per allocation and kind)."""

    __tablename__ = "quota_alerts"
    __table_args__ = (
        UniqueConstraint("allocation_id", "kind"),
        Index("ix_quota_alerts_member_id_id", "member_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id", ondelete="RESTRICT"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="RESTRICT"))
    kind: Mapped[AlertKind] = mapped_column(enum_column(AlertKind, "quota_alert_kind"))
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_msu: Mapped[int] = mapped_column(BigInteger)
    used_msu: Mapped[int] = mapped_column(BigInteger)
    projected_exhaustion_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # mail outbox: sent after the transaction that fired the alert has committed
    mailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mail_error: Mapped[str | None] = mapped_column(Text)


class LimitSync(Base):
    """Outbox of the Slurm backstop: a member's limit on a cluster needs pushing when
    `generation` (bumped by every grant, adjustment, refund or expiry) exceeds `pushed_generation`.
    """

    __tablename__ = "quota_limit_syncs"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"),
                                           primary_key=True)
    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    pushed_generation: Mapped[int] = mapped_column(Integer, default=0)
    pushed_billing_minutes: Mapped[int | None] = mapped_column(BigInteger)
    pushed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
