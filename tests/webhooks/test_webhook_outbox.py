"""The outbox side of job state changes: the project's subscriptions are read once per
transaction (a submission changes its job's state twice in its first one), and a subscription
made earlier in the same transaction still gets the later changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from jobs_helpers import World, submit
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.models import User
from gateway.auth.principal import principal_for_user
from gateway.db import Database
from gateway.jobs.models import Job, JobState
from gateway.jobs.transitions import transition
from gateway.settings import Settings
from gateway.webhooks import service as webhooks
from gateway.webhooks.models import WebhookDelivery, WebhookEvent
from gateway.webhooks.schemas import WebhookCreate

Headers = Callable[[User], dict[str, str]]


def subscribe(session: Session, world: World, settings: Settings) -> None:
    """A subscription to the project's job state changes (its target is never called)."""
    webhooks.create(session, principal_for_user(session, world.manager), world.acme,
                    world.project, settings=settings, context=RequestContext(),
                    data=WebhookCreate(url="https://hooks.example.test/in",
                                       events=[WebhookEvent.job_state_changed]))


def _lookups(database: Database, do: Callable[[], Any]) -> list[str]:
    """The statements that read a project's webhook subscriptions while `do` runs."""
    reads: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.startswith("SELECT webhook_subscriptions."):
            reads.append(statement)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        do()
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    return reads


def test_a_submission_reads_its_projects_subscriptions_once_per_transaction(
        *, client: TestClient, world: World, database: Database, session: Session,
        settings: Settings, as_: Headers) -> None:
    answers: list[Any] = []
    # with or without subscriptions: one lookup in the transaction before sbatch (its job
    # changes state twice there) and one in the transaction after it
    unsubscribed = _lookups(database, lambda: answers.append(
        submit(client, as_(world.researcher), world.project)))
    subscribe(session, world, settings)
    subscribed = _lookups(database, lambda: answers.append(
        submit(client, as_(world.researcher), world.project)))
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    assert (len(unsubscribed), len(subscribed)) == (2, 2)
    payloads = session.scalars(select(WebhookDelivery.payload).order_by(WebhookDelivery.id))
    assert [f'"to_state":"{state}"' in body for body, state in zip(
        payloads, ["accepted", "submitting", "pending"], strict=True)] == [True] * 3


def test_a_subscription_made_in_the_transaction_gets_its_later_state_changes(
        client: TestClient, world: World, session: Session, settings: Settings,
        as_: Headers) -> None:
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 201, answer.text
    job = session.scalars(select(Job).where(Job.public_id == answer.json()["id"])).one()
    transition(session, job, JobState.running)  # no subscription yet: nothing to send
    assert session.scalars(select(WebhookDelivery)).all() == []
    subscribe(session, world, settings)
    transition(session, job, JobState.completed)
    sent = session.scalars(select(WebhookDelivery)).all()
    assert len(sent) == 1 and '"to_state":"completed"' in sent[0].payload
