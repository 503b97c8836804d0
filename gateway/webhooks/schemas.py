"""What the webhook routes take and give. A subscription's secret is shown once, at creation."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    model_validator,
)

from gateway.jobs.models import JobState
from gateway.webhooks import targets
from gateway.webhooks.models import (
    DeliveryState,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)


def _url(value: str) -> str:
    return str(targets.parse(value).url)


TargetUrl = Annotated[str, StringConstraints(max_length=targets.MAX_URL_LENGTH),
                      AfterValidator(_url)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: TargetUrl = Field(description="http(s); its host must resolve to public addresses "
                                        "unless the gateway's configuration allows it")
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(WebhookEvent))
    job_states: list[JobState] | None = Field(
        None, min_length=1, max_length=len(JobState),
        description="job.state_changed only when a job enters one of these; default: all")
    description: str = Field("", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    secret: SecretStr | None = Field(
        None, min_length=24, max_length=200,
        description="the HMAC key; generated when absent. Shown in this response only.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.events)) != len(self.events):
            raise ValueError("events are listed twice")
        if self.job_states is not None and WebhookEvent.job_state_changed not in self.events:
            raise ValueError("job_states filters job.state_changed, which is not subscribed")
        secret = self.secret.get_secret_value() if self.secret else ""
        if any(ord(c) < 0x21 or ord(c) > 0x7e for c in secret):
            raise ValueError("the secret must be printable ASCII without spaces")
        return self


class WebhookOut(BaseModel):
    id: int
    project_id: int
    url: str
    events: list[WebhookEvent]
    job_states: list[JobState] | None
    description: str
    secret_hint: str = Field(description="the secret's last characters, to tell it apart")
    created_at: datetime

    @classmethod
    def of(cls, subscription: WebhookSubscription) -> WebhookOut:
        return cls(id=subscription.id, project_id=subscription.project_id,
                   url=subscription.url, events=[WebhookEvent(e) for e in subscription.events],
                   job_states=None if subscription.job_states is None else
                   [JobState(s) for s in subscription.job_states],
                   description=subscription.description, secret_hint=subscription.secret_hint,
                   created_at=subscription.created_at)


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the HMAC key of X-Hpcgw-Signature: keep it now, it is "
                                    "never shown again")


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: str = Field(description="X-Hpcgw-Delivery")
    event: WebhookEvent
    state: DeliveryState
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: list[AttemptOut]
    payload: dict[str, Any] = Field(description="the body every attempt sent")

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(id=delivery.public_id, event=delivery.event, state=delivery.state,
                   attempts=delivery.attempts, last_status_code=delivery.last_status_code,
                   last_error=delivery.last_error, last_attempt_at=delivery.last_attempt_at,
                   next_attempt_at=delivery.next_attempt_at, delivered_at=delivery.delivered_at,
                   created_at=delivery.created_at,
                   attempt_log=[AttemptOut.model_validate(a) for a in delivery.attempt_log],
                   payload=json.loads(delivery.payload))
