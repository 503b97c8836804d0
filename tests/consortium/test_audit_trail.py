"""The audit trail: every change writes its event in its own transaction; admins read it back
with filters and stable cursor pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factories import Cast, audit_events
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from consortium import audit
from consortium.models import AuditEvent, Outcome


def test_every_state_changing_action_writes_an_audit_event_with_its_request(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    admin, manager = as_(cast.admin), as_(cast.manager)
    calls = [
        ("post", "/api/v1/members", admin, {"slug": "initech", "name": "Initech",
                                            "kind": "company"}),
        ("patch", "/api/v1/members/initech", admin, {"name": "Initech SA"}),
        ("patch", "/api/v1/members/initech", admin, {"status": "suspended"}),
        ("patch", "/api/v1/members/initech", admin, {"status": "active"}),
        ("post", "/api/v1/members/initech/identities", admin, {
            "cluster": "meso", "unix_user": "initech", "slurm_account": "initech",
            "ssh_key_ref": "initech"}),
        ("post", "/api/v1/members/acme/projects", manager, {"slug": "p1", "name": "P",
                                                            "domain": "health"}),
        ("patch", "/api/v1/members/acme/projects/p1", manager, {"name": "Q"}),
        ("post", "/api/v1/members/acme/invitations", manager, {"email": "a@acme.test",
                                                               "role": "viewer"}),
        ("patch", f"/api/v1/members/acme/users/{cast.viewer.id}", manager,
         {"role": "researcher"}),
        ("delete", f"/api/v1/members/acme/users/{cast.viewer.id}", manager, None),
    ]
    for method, path, headers, body in calls:
        answer = app_client.request(method, path, headers={**headers, "X-Request-ID": path[-20:]
                                                           .replace("/", "-")}, json=body)
        assert answer.status_code < 300, (path, answer.text)
    invitation_id = audit_events(session, "invitation.create")[0].target_id
    assert app_client.delete(f"/api/v1/members/acme/invitations/{invitation_id}",
                             headers=manager).status_code == 204
    events = audit_events(session)
    assert [e.action for e in events] == [
        "member.create", "member.update", "member.suspend", "member.reactivate",
        "identity.add", "project.create", "project.update", "invitation.create",
        "membership.update", "membership.remove", "invitation.revoke"]
    assert all(e.outcome == Outcome.success for e in events)
    assert all(e.client_addr == "testclient" for e in events)
    assert events[0].request_id == "-api-v1-members"
    assert {e.actor for e in events} == {"admin@consortium.test", "manager@acme.test"}
    assert events[-1].actor_user_id == cast.manager.id


def test_a_refused_change_leaves_no_success_event(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    answer = app_client.post("/api/v1/members", headers=as_(cast.admin), json={
        "slug": "acme", "name": "Again", "kind": "company"})
    assert answer.status_code == 409
    assert audit_events(session) == []


def test_only_admins_read_the_audit_trail(app_client: TestClient, cast: Cast, as_) -> None:
    for user in (cast.manager, cast.researcher, cast.viewer):
        answer = app_client.get("/api/v1/audit", headers=as_(user))
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
    assert app_client.get("/api/v1/audit").status_code == 401


def _events(session: Session, cast: Cast) -> list[AuditEvent]:
    """Seven events over seven days: acme's by its manager, globex's by the CLI."""
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    events = []
    for day in range(7):
        member = cast.acme if day % 2 == 0 else cast.globex
        event = audit.record(
            session, actor="manager@acme.test" if member is cast.acme else "cli",
            action="project.create" if day < 5 else "member.update",
            target_type="project", target_id=day, member_id=member.id,
            outcome=Outcome.denied if day == 3 else Outcome.success)
        event.at = start + timedelta(days=day)  # before the insert: the table is append-only
        events.append(event)
    session.flush()
    return events


MARCH = {"since": "2026-03-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"}


def _ids(client: TestClient, headers: dict[str, str], **params: object) -> list[int]:
    """Ids of the events of March 2026 (other domains audit too: seeding templates...)."""
    answer = client.get("/api/v1/audit", headers=headers, params={**MARCH, **params})
    assert answer.status_code == 200, answer.text
    return [e["id"] for e in answer.json()["items"]]


def test_audit_filters_by_member_actor_action_outcome_and_time(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    ids = [e.id for e in _events(session, cast)]
    admin = as_(cast.admin)
    newest_first = list(reversed(ids))
    assert _ids(app_client, admin) == newest_first
    assert _ids(app_client, admin, member="globex") == [ids[5], ids[3], ids[1]]
    assert _ids(app_client, admin, actor="manager@acme.test") == [ids[6], ids[4], ids[2], ids[0]]
    assert _ids(app_client, admin, action="member.update") == [ids[6], ids[5]]
    assert _ids(app_client, admin, outcome="denied") == [ids[3]]
    assert _ids(app_client, admin, since="2026-03-03T12:00:00Z",
                until="2026-03-05T12:00:00+00:00") == [ids[3], ids[2]]
    assert _ids(app_client, admin, member="acme", outcome="success",
                action="project.create") == [ids[4], ids[2], ids[0]]


def test_audit_pages_follow_the_id_order_and_stay_stable_when_events_arrive(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    ids = [e.id for e in _events(session, cast)]
    admin = as_(cast.admin)
    first = app_client.get("/api/v1/audit", headers=admin, params={**MARCH, "limit": 3}).json()
    assert [e["id"] for e in first["items"]] == [ids[6], ids[5], ids[4]]
    late = audit.record(session, actor="cli", action="member.update", target_type="member")
    late.at = datetime(2026, 3, 20, tzinfo=UTC)  # in the window, after the first page was read
    session.flush()
    second = app_client.get("/api/v1/audit", headers=admin,
                            params={**MARCH, "limit": 3, "cursor": first["next_cursor"]}).json()
    assert [e["id"] for e in second["items"]] == [ids[3], ids[2], ids[1]]
    third = app_client.get("/api/v1/audit", headers=admin,
                           params={**MARCH, "limit": 3, "cursor": second["next_cursor"]}).json()
    assert ([e["id"] for e in third["items"]], third["next_cursor"]) == ([ids[0]], None)
    assert _ids(app_client, admin, limit=1) == [late.id]  # a new first page starts with it


def test_audit_query_refuses_naive_times_bad_cursors_and_unknown_members(
        app_client: TestClient, cast: Cast, as_) -> None:
    admin = as_(cast.admin)
    for params in ({"since": "2026-03-01T12:00:00"}, {"cursor": "abc"}, {"limit": 0},
                   {"outcome": "maybe"}):
        answer = app_client.get("/api/v1/audit", headers=admin, params=params)
        assert answer.status_code == 422, params
        assert answer.headers["content-type"] == "application/problem+json"
    assert app_client.get("/api/v1/audit", headers=admin,
                          params={"member": "nobody"}).status_code == 404
