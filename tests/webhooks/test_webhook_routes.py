"""The webhook routes: managers and admins only (another member's caller gets 404, a
researcher or viewer 403), the secret shown once and stored sealed, deletion, the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from factories import make_project, make_user
from fastapi.testclient import TestClient
from jobs_helpers import World
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.models import AuditEvent, Outcome, Role, User
from gateway.settings import Settings
from gateway.webhooks.models import WebhookSubscription

Headers = Callable[[User], dict[str, str]]
HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["job.state_changed"]}


def hooks_path(world: World) -> str:
    return f"/api/v1/members/{world.acme.slug}/projects/{world.project.slug}/webhooks"


def create(client: TestClient, world: World, headers: dict[str, str],
           **body: Any) -> dict[str, Any]:
    answer = client.post(hooks_path(world), headers=headers, json={**HOOK, **body})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def every_route(world: World, webhook_id: int) -> list[tuple[str, str]]:
    one = f"{hooks_path(world)}/{webhook_id}"
    return [("POST", hooks_path(world)), ("GET", hooks_path(world)), ("GET", one),
            ("GET", f"{one}/deliveries"), ("DELETE", one)]


def test_a_manager_subscribes_and_sees_the_secret_once(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    created = create(client, world, as_(world.manager), job_states=["running", "completed"],
                     description="CI of the vision team")
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) >= 40
    assert created["secret_hint"] == "..." + secret[-4:]
    assert created["job_states"] == ["running", "completed"]
    listed = client.get(hooks_path(world), headers=as_(world.manager))
    one = client.get(f"{hooks_path(world)}/{created['id']}", headers=as_(world.manager))
    assert listed.status_code == one.status_code == 200
    assert [w["id"] for w in listed.json()] == [created["id"]]
    for answer in (listed, one):
        assert secret not in answer.text
    assert "secret" not in one.json() and "secret" not in listed.json()[0]
    stored = session.get_one(WebhookSubscription, created["id"])
    assert secret not in stored.secret_sealed  # sealed, not kept in clear


def test_a_given_secret_is_used_and_never_stored_in_clear(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    given = "my-own-shared-secret-0123456789"
    created = create(client, world, as_(world.manager), secret=given)
    assert created["secret"] == given
    assert given not in session.get_one(WebhookSubscription, created["id"]).secret_sealed


def test_another_members_manager_gets_404_on_every_webhook_route(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    webhook_id = create(client, world, as_(world.manager))["id"]
    globex_manager = make_user(session, email="manager@globex.test",
                               roles={world.globex: Role.manager})
    for method, path in every_route(world, webhook_id):
        answer = client.request(method, path, headers=as_(globex_manager), json=HOOK)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("role", ["researcher", "viewer"])
def test_a_researcher_or_viewer_of_the_member_gets_403(
        *, client: TestClient, world: World, as_: Headers, role: str) -> None:
    webhook_id = create(client, world, as_(world.manager))["id"]
    user = getattr(world, role)
    for method, path in every_route(world, webhook_id):
        answer = client.request(method, path, headers=as_(user), json=HOOK)
        assert answer.status_code == 403, (method, path, answer.text)
    assert client.get(hooks_path(world), headers=as_(world.manager)).json() != []


def test_an_admin_manages_any_members_webhooks(
        *, client: TestClient, world: World, as_: Headers) -> None:
    webhook_id = create(client, world, as_(world.admin))["id"]
    assert client.get(f"{hooks_path(world)}/{webhook_id}/deliveries",
                      headers=as_(world.admin)).json() == {"items": [], "next_cursor": None}


def test_a_webhook_is_reached_only_through_its_own_project(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    webhook_id = create(client, world, as_(world.manager))["id"]
    other = make_project(session, world.acme, "other")
    path = f"/api/v1/members/{world.acme.slug}/projects/{other.slug}/webhooks/{webhook_id}"
    assert client.get(path, headers=as_(world.manager)).status_code == 404
    assert client.delete(path, headers=as_(world.manager)).status_code == 404


def test_deleting_a_webhook_removes_it_and_both_changes_are_audited(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    webhook_id = create(client, world, as_(world.manager))["id"]
    path = f"{hooks_path(world)}/{webhook_id}"
    assert client.delete(path, headers=as_(world.manager)).status_code == 204
    assert client.get(path, headers=as_(world.manager)).status_code == 404
    assert client.delete(path, headers=as_(world.manager)).status_code == 404
    session.expire_all()
    events = session.scalars(select(AuditEvent).where(AuditEvent.target_type == "webhook")
                             .order_by(AuditEvent.id)).all()
    assert [(e.action, e.actor, e.target_id, e.outcome) for e in events] == [
        ("webhook.create", "manager@acme.test", str(webhook_id), Outcome.success),
        ("webhook.delete", "manager@acme.test", str(webhook_id), Outcome.success)]
    assert "whsec_" not in str(events[0].details)


def test_a_refused_subscription_is_audited_as_denied(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    answer = client.post(hooks_path(world), headers=as_(world.researcher), json=HOOK)
    assert answer.status_code == 403
    session.expire_all()
    denied = session.scalars(select(AuditEvent).where(AuditEvent.action == "webhook.create"))
    assert [(e.actor, e.outcome) for e in denied] == [("researcher@acme.test", Outcome.denied)]


@pytest.mark.parametrize(("body", "field"), [
    ({"events": []}, "events"),
    ({"events": ["job.created"]}, "events"),
    ({"events": ["quota.threshold"], "job_states": ["running"]}, "body"),
    ({"job_states": ["sleeping"]}, "job_states"),
    ({"secret": "short"}, "secret"),
    ({"url": "http://127.0.0.1:9/" + "x" * 2000}, "url"),
])
def test_bad_subscriptions_are_422_with_the_field(
        *, client: TestClient, world: World, as_: Headers, body: dict[str, Any],
        field: str) -> None:
    answer = client.post(hooks_path(world), headers=as_(world.manager), json={**HOOK, **body})
    assert answer.status_code == 422, answer.text
    assert field in {str(p) for e in answer.json()["errors"] for p in e["loc"]}


def test_a_project_has_a_bounded_number_of_webhooks(
        *, client: TestClient, world: World, as_: Headers, settings: Settings) -> None:
    for _ in range(settings.webhooks.max_per_project):
        create(client, world, as_(world.manager))
    answer = client.post(hooks_path(world), headers=as_(world.manager), json=HOOK)
    assert answer.status_code == 409
