"""Tables of the webhooks: a project's subscriptions and the outbox of their deliveries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from consortium.base import Base, BigIntPK, UTCDateTime, enum_column, utcnow


class WebhookEvent(StrEnum):
    job_state_changed = "job.state_changed"
    quota_threshold = "quota.threshold"


class DeliveryState(StrEnum):
    pending = "pending"  # due at next_attempt_at
    delivered = "delivered"  # a 2xx answer
    failed = "failed"  # max_attempts reached


class WebhookSubscription(Base):
    """A URL of a project told of its events. The signing secret is stored sealed
    (AES-GCM under a key derived from the gateway's secret key) and shown only at creation."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"),
                                           index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list[str]] = mapped_column(JSON)
    # job.state_changed only for these states; None: every state
    job_states: Mapped[list[str] | None] = mapped_column(JSON)
    secret_sealed: Mapped[str] = mapped_column(String(400))
    secret_hint: Mapped[str] = mapped_column(String(16))  # its last characters
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one subscription, written in the transaction of the event itself (an
    outbox) and sent by the delivery worker, which claims it until `claimed_until`."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_subscription_id_id", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # X-Hpcgw-Delivery
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))
    event: Mapped[WebhookEvent] = mapped_column(enum_column(WebhookEvent, "webhook_event"))
    payload: Mapped[str] = mapped_column(Text)  # the body, byte for byte, of every attempt
    state: Mapped[DeliveryState] = mapped_column(
        enum_column(DeliveryState, "webhook_delivery_state"), default=DeliveryState.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # one entry per attempt (at most max_attempts): at, status_code, error, duration_ms
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
