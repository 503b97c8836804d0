"""A member's users and roles, and its projects, through the API."""

from __future__ import annotations

from factories import Cast, audit_events, make_project
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from consortium.models import Membership, Outcome, Role


def test_manager_lists_its_members_users_with_their_roles(
        app_client: TestClient, cast: Cast, as_) -> None:
    answer = app_client.get("/api/v1/members/acme/users", headers=as_(cast.manager))
    assert answer.status_code == 200
    assert [(u["email"], u["role"]) for u in answer.json()] == [
        ("manager@acme.test", "manager"), ("researcher@acme.test", "researcher"),
        ("viewer@acme.test", "viewer")]


def test_researchers_and_viewers_cannot_list_or_change_users(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    for user in (cast.researcher, cast.viewer):
        assert app_client.get("/api/v1/members/acme/users",
                              headers=as_(user)).status_code == 403
        answer = app_client.patch(f"/api/v1/members/acme/users/{cast.viewer.id}",
                                  headers=as_(user), json={"role": "manager"})
        assert answer.status_code == 403
        assert app_client.delete(f"/api/v1/members/acme/users/{cast.manager.id}",
                                 headers=as_(user)).status_code == 403
    session.expire_all()
    assert session.get(Membership, (cast.viewer.id, cast.acme.id)).role == Role.viewer  # type: ignore[union-attr]
    denied = [e for e in audit_events(session) if e.outcome == Outcome.denied]
    assert [e.action for e in denied] == ["membership.update", "membership.remove"] * 2


def test_manager_changes_a_users_role_and_the_change_is_audited(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    answer = app_client.patch(f"/api/v1/members/acme/users/{cast.viewer.id}",
                              headers=as_(cast.manager), json={"role": "researcher"})
    assert answer.status_code == 200
    assert answer.json()["role"] == "researcher"
    [event] = audit_events(session, "membership.update")
    assert (event.target_id, event.member_id, event.details) == (
        str(cast.viewer.id), cast.acme.id, {"from": "viewer", "to": "researcher"})


def test_a_manager_cannot_leave_its_member_without_a_manager(
        app_client: TestClient, cast: Cast, as_) -> None:
    me = f"/api/v1/members/acme/users/{cast.manager.id}"
    assert app_client.patch(me, headers=as_(cast.manager),
                            json={"role": "viewer"}).status_code == 409
    assert app_client.delete(me, headers=as_(cast.manager)).status_code == 409
    # with a second manager, the first may step down
    app_client.patch(f"/api/v1/members/acme/users/{cast.researcher.id}",
                     headers=as_(cast.manager), json={"role": "manager"})
    assert app_client.patch(me, headers=as_(cast.manager),
                            json={"role": "viewer"}).status_code == 200


def test_manager_removes_a_user_from_its_member_and_the_account_stays(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    answer = app_client.delete(f"/api/v1/members/acme/users/{cast.viewer.id}",
                               headers=as_(cast.manager))
    assert answer.status_code == 204
    session.expire_all()
    assert session.get(Membership, (cast.viewer.id, cast.acme.id)) is None
    assert [e.action for e in audit_events(session)] == ["membership.remove"]
    # the former viewer no longer sees the member
    assert app_client.get("/api/v1/members/acme", headers=as_(cast.viewer)).status_code == 404


def test_a_user_who_is_not_of_the_member_answers_404(
        app_client: TestClient, cast: Cast, as_) -> None:
    answer = app_client.patch(f"/api/v1/members/acme/users/{cast.globex_manager.id}",
                              headers=as_(cast.manager), json={"role": "viewer"})
    assert answer.status_code == 404


def test_an_unknown_role_is_refused(app_client: TestClient, cast: Cast, as_) -> None:
    answer = app_client.patch(f"/api/v1/members/acme/users/{cast.viewer.id}",
                              headers=as_(cast.manager), json={"role": "owner"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["body", "role"]


def test_admin_manages_any_members_users(app_client: TestClient, cast: Cast, as_) -> None:
    admin = as_(cast.admin)
    assert app_client.get("/api/v1/members/globex/users", headers=admin).status_code == 200
    # an admin may even remove the last manager: admins manage the member meanwhile
    answer = app_client.delete(f"/api/v1/members/globex/users/{cast.globex_manager.id}",
                               headers=admin)
    assert answer.status_code == 204


def test_manager_creates_lists_reads_and_archives_a_project(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    manager = as_(cast.manager)
    answer = app_client.post("/api/v1/members/acme/projects", headers=manager, json={
        "slug": "llm-mobility", "name": "Traffic forecasts", "domain": "mobility",
        "description": "Bus lines of the Métropole"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "active"
    # researchers and viewers read projects (a job names one)
    for user in (cast.researcher, cast.viewer):
        listed = app_client.get("/api/v1/members/acme/projects", headers=as_(user)).json()
        assert [p["slug"] for p in listed] == ["llm-mobility"]
    answer = app_client.patch("/api/v1/members/acme/projects/llm-mobility", headers=manager,
                              json={"status": "archived", "domain": "public_services"})
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["domain"]) == ("archived", "public_services")
    read = app_client.get("/api/v1/members/acme/projects/llm-mobility", headers=manager)
    assert read.json()["status"] == "archived"
    assert [e.action for e in audit_events(session)] == ["project.create", "project.update"]
    assert audit_events(session, "project.update")[0].details == {
        "status": "archived", "domain": "public_services"}


def test_project_slug_is_unique_within_a_member_only(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    make_project(session, cast.acme, "forecast")
    body = {"slug": "forecast", "name": "Forecast", "domain": "research"}
    assert app_client.post("/api/v1/members/acme/projects", headers=as_(cast.manager),
                           json=body).status_code == 409
    assert app_client.post("/api/v1/members/globex/projects", headers=as_(cast.globex_manager),
                           json=body).status_code == 201


def test_researchers_and_viewers_cannot_create_or_change_projects(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    make_project(session, cast.acme, "forecast")
    for user in (cast.researcher, cast.viewer):
        assert app_client.post("/api/v1/members/acme/projects", headers=as_(user), json={
            "slug": "mine", "name": "Mine", "domain": "research"}).status_code == 403
        assert app_client.patch("/api/v1/members/acme/projects/forecast", headers=as_(user),
                                json={"name": "Renamed"}).status_code == 403


def test_a_project_domain_must_be_one_of_the_declared_domains(
        app_client: TestClient, cast: Cast, as_) -> None:
    answer = app_client.post("/api/v1/members/acme/projects", headers=as_(cast.manager), json={
        "slug": "ads", "name": "Ads", "domain": "advertising"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["body", "domain"]


def test_an_unknown_project_answers_404(app_client: TestClient, cast: Cast, as_) -> None:
    assert app_client.get("/api/v1/members/acme/projects/nope",
                          headers=as_(cast.manager)).status_code == 404
