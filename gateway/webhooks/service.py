"""Webhook subscriptions of a project, and the outbox their events go to.

Managing them needs `members:manage` on the project's member (managers, admins); another
member's caller gets 404. Events become delivery rows inside the transaction that makes them
(a job's state change, a quota alert): a change rolled back sends nothing, a change committed
is sent at least once, by the delivery worker (delivery.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from consortium import audit
from consortium.audit import RequestContext
from consortium.authz import Principal, Scope, require
from consortium.base import utcnow
from consortium.errors import Conflict, NotFound
from consortium.models import Member, Project
from gateway.jobs import transitions
from gateway.jobs.models import Job, JobEvent
from gateway.webhooks import signing, targets
from gateway.webhooks.config import WebhooksConfig, WebhookSettings
from gateway.webhooks.models import (
    DeliveryState,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from gateway.webhooks.schemas import WebhookCreate
from quotas import thresholds
from quotas.models import Alert, Allocation


def require_manager(principal: Principal, member: Member) -> None:
    require(principal, Scope.members_manage, member.id)


async def check_target(url: str, config: WebhookSettings) -> None:
    """The target policy, DNS included, before a subscription is made (and again before each
    attempt, see delivery.py). Outside any transaction: a lookup can take seconds."""
    try:
        with anyio.fail_after(config.timeout_seconds):
            await targets.resolve(url, targets.TargetPolicy.of(config))
    except TimeoutError:
        # parsed before the lookup timed out; a slow name reads as any other refused one
        raise targets.TargetRefused(targets.not_public(targets.parse(url).host)) from None


def create(session: Session, principal: Principal, member: Member, project: Project, *,
           data: WebhookCreate, settings: WebhooksConfig,
           context: RequestContext) -> tuple[WebhookSubscription, str]:
    """The subscription and its secret (returned this once); its URL passed `check_target`."""
    require_manager(principal, member)
    config = settings.webhooks
    count = session.scalar(select(func.count()).select_from(WebhookSubscription)
                           .where(WebhookSubscription.project_id == project.id))
    if (count or 0) >= config.max_per_project:
        raise Conflict(f"a project has at most {config.max_per_project} webhooks")
    secret = (data.secret.get_secret_value() if data.secret
              else signing.new_secret(config.secret_bytes))
    subscription = WebhookSubscription(
        member_id=member.id, project_id=project.id, url=data.url,
        description=data.description, events=[e.value for e in data.events],
        job_states=None if data.job_states is None else [s.value for s in data.job_states],
        secret_sealed=signing.seal(secret, settings.secret_key.get_secret_value()),
        secret_hint=signing.hint(secret), created_by_id=principal.user_id)
    session.add(subscription)
    session.flush()
    session.info.pop(_SUBSCRIBERS, None)
    audit.record(session, actor=principal, action="webhook.create", target_type="webhook",
                 target_id=subscription.id, member_id=member.id, context=context,
                 details={"project": project.slug, "url": subscription.url,
                          "events": subscription.events,
                          "secret": "generated" if data.secret is None else "given"})
    return subscription, secret


def list_for(session: Session, principal: Principal, member: Member,
             project: Project) -> Sequence[WebhookSubscription]:
    require_manager(principal, member)
    return session.scalars(select(WebhookSubscription)
                           .where(WebhookSubscription.project_id == project.id)
                           .order_by(WebhookSubscription.id)).all()


def get(session: Session, principal: Principal, member: Member, project: Project,
        webhook_id: int) -> WebhookSubscription:
    require_manager(principal, member)
    subscription = session.get(WebhookSubscription, webhook_id)
    if subscription is None or subscription.project_id != project.id:
        raise NotFound(f"no webhook {webhook_id} in '{member.slug}/{project.slug}'")
    return subscription


def delete(session: Session, principal: Principal, member: Member, project: Project,
           webhook_id: int, *, context: RequestContext) -> None:
    """Remove it with its delivery log; deliveries still due are never sent."""
    subscription = get(session, principal, member, project, webhook_id)
    audit.record(session, actor=principal, action="webhook.delete", target_type="webhook",
                 target_id=subscription.id, member_id=member.id, context=context,
                 details={"project": project.slug, "url": subscription.url})
    session.delete(subscription)
    session.flush()
    session.info.pop(_SUBSCRIBERS, None)


def deliveries(session: Session, principal: Principal, member: Member, project: Project,
               webhook_id: int, *, state: DeliveryState | None = None,
               before_id: int | None = None, limit: int = 50) -> Sequence[WebhookDelivery]:
    """The delivery log, newest first."""
    subscription = get(session, principal, member, project, webhook_id)
    query = (select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription.id)
             .order_by(WebhookDelivery.id.desc()).limit(limit))
    if state is not None:
        query = query.where(WebhookDelivery.state == state)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    return session.scalars(query).all()


# --- the outbox ----------------------------------------------------------------------------

def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _enqueue(session: Session, subscription: WebhookSubscription, event: WebhookEvent, *,
             member: Member, project_slug: str, data: dict[str, Any], now: datetime) -> None:
    public_id = secrets.token_hex(16)
    body = {"id": public_id, "event": event.value, "created_at": _iso(now),
            "member": member.slug, "project": project_slug, "data": data}
    session.add(WebhookDelivery(
        public_id=public_id, subscription_id=subscription.id, event=event,
        payload=json.dumps(body, separators=(",", ":")), state=DeliveryState.pending,
        attempts=0, next_attempt_at=now, attempt_log=[], created_at=now))


def _wants(subscription: WebhookSubscription, event: WebhookEvent) -> bool:
    return event.value in subscription.events


# session.info key: the job-event subscriptions per project, read once per transaction
_SUBSCRIBERS = "webhooks.job_subscribers"
_PROJECT_SUBSCRIPTIONS = (select(WebhookSubscription)
                          .where(WebhookSubscription.project_id == bindparam("project_id"))
                          .order_by(WebhookSubscription.id))


def _read_this_transaction(session: Session) -> dict[int, list[WebhookSubscription]]:
    transaction = session.get_transaction()
    cached = session.info.get(_SUBSCRIBERS)
    if cached is None or cached[0] is not transaction:
        cached = session.info[_SUBSCRIBERS] = (transaction, {})
    by_project: dict[int, list[WebhookSubscription]] = cached[1]
    return by_project


def _job_subscribers(session: Session, project_id: int) -> list[WebhookSubscription]:
    """The project's subscriptions to job state changes, read once per transaction (a submit
    changes its job's state twice in one): a project without any costs one SELECT, not one
    per change. `create` and `delete` drop what this transaction read."""
    by_project = _read_this_transaction(session)
    if project_id not in by_project:
        by_project[project_id] = [
            s for s in session.scalars(_PROJECT_SUBSCRIPTIONS, {"project_id": project_id})
            if _wants(s, WebhookEvent.job_state_changed)]
    return by_project[project_id]


def enqueue_job_event(session: Session, job: Job, event: JobEvent) -> None:
    """A `transitions.on_state_change` listener: inside the state change's transaction."""
    subscriptions = [s for s in _job_subscribers(session, job.project_id)
                     if s.job_states is None or event.to_state.value in s.job_states]
    if not subscriptions:
        return
    session.flush()  # the event's id
    member = session.get_one(Member, job.member_id)
    project = session.get_one(Project, job.project_id)
    data = {
        "job": {"id": job.public_id, "name": job.name, "cluster": job.cluster,
                "project": project.slug, "scheduler_id": job.scheduler_id,
                "state": job.state.value},
        "event_id": event.id,
        "from_state": None if event.from_state is None else event.from_state.value,
        "to_state": event.to_state.value,
        "at": _iso(event.at),
        "detail": event.detail,
    }
    now = utcnow()
    for subscription in subscriptions:
        _enqueue(session, subscription, WebhookEvent.job_state_changed, member=member,
                 project_slug=project.slug, data=data, now=now)


def enqueue_alerts(session: Session, alerts: Sequence[Alert]) -> None:
    """A `thresholds.on_alerts` listener: each alert to the subscriptions asking for
    quota.threshold in the projects that draw on the allocation (all the member's projects,
    or the one it is earmarked to)."""
    session.flush()  # the alerts' ids
    now = utcnow()
    for alert in alerts:
        allocation = session.get_one(Allocation, alert.allocation_id)
        query = (select(WebhookSubscription, Project.slug)
                 .join(Project, Project.id == WebhookSubscription.project_id)
                 .where(WebhookSubscription.member_id == alert.member_id)
                 .order_by(WebhookSubscription.id))
        if allocation.project_id is not None:
            query = query.where(WebhookSubscription.project_id == allocation.project_id)
        found = [(s, slug) for s, slug in session.execute(query)
                 if _wants(s, WebhookEvent.quota_threshold)]
        if not found:
            continue
        member = session.get_one(Member, alert.member_id)
        data = {"alert": {
            "id": alert.id, "kind": alert.kind.value, "allocation_id": alert.allocation_id,
            "fired_at": _iso(alert.fired_at), "granted_msu": alert.granted_msu,
            "used_msu": alert.used_msu,
            "projected_exhaustion_at": _iso(alert.projected_exhaustion_at),
            "message": thresholds.describe(alert),
        }}
        for subscription, project_slug in found:
            _enqueue(session, subscription, WebhookEvent.quota_threshold, member=member,
                     project_slug=project_slug, data=data, now=now)


def install() -> None:
    """Listen to job state changes and quota alerts (idempotent; every process that changes
    them calls it: the app's lifespan and `hpcgw tracker`)."""
    transitions.on_state_change(enqueue_job_event)
    thresholds.on_alerts(enqueue_alerts)
