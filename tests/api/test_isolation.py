"""One member's people can neither see nor touch another member's objects, through any route:
they get 404 (never 403, which would tell the object exists). And every error, whatever its
status, is problem+json."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from factories import Cast, auth_headers, make_cast, make_project
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.models import (
    AuditEvent,
    Invitation,
    Membership,
    Outcome,
    Project,
    Role,
)
from consortium.schemas import InvitationCreate
from consortium.service import create_invitation, get_member
from gateway.api.app import API_PREFIX, create_app
from gateway.db import Database
from gateway.settings import Settings

PROBLEM = "application/problem+json"


@dataclass
class World:
    cast: Cast
    project: str  # globex's project slug
    invitation_id: int  # a pending invitation of globex


@pytest.fixture
def world(session: Session) -> World:
    cast = make_cast(session)
    project = make_project(session, cast.globex, "secret-plan")
    invitation, _ = create_invitation(
        session, "cli", get_member(session, "cli", "globex"),
        InvitationCreate(email="new@globex.test", role=Role.viewer), ttl=timedelta(days=1),
        context=RequestContext())
    return World(cast=cast, project=project.slug, invitation_id=invitation.id)


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # {project}, {user_id}, {invitation_id}, {cluster}: globex's objects
    body: dict[str, object] | None = None
    admin_only: bool = False  # the positive control is then made by an admin

    def url(self, world: World) -> str:
        return API_PREFIX + self.path.format(
            member="globex", project=world.project, user_id=world.cast.globex_manager.id,
            invitation_id=world.invitation_id, cluster="local")  # make_member's identity


# Every member-scoped route, with a body the right caller would see accepted.
MEMBER_ROUTES = [
    Call("GET", "/members/{member}"),
    Call("PATCH", "/members/{member}", {"name": "Renamed"}, admin_only=True),
    Call("POST", "/members/{member}/identities", {
        "cluster": "meso", "unix_user": "globex2", "slurm_account": "globex2",
        "ssh_key_ref": "globex2"}, admin_only=True),
    Call("DELETE", "/members/{member}/identities/{cluster}", admin_only=True),
    Call("GET", "/members/{member}/users"),
    Call("PATCH", "/members/{member}/users/{user_id}", {"role": "manager"}),
    Call("DELETE", "/members/{member}/users/{user_id}", admin_only=True),
    Call("POST", "/members/{member}/projects", {"slug": "p2", "name": "P2",
                                                "domain": "research"}),
    Call("GET", "/members/{member}/projects"),
    Call("GET", "/members/{member}/projects/{project}"),
    Call("PATCH", "/members/{member}/projects/{project}", {"name": "Renamed"}),
    Call("POST", "/members/{member}/invitations", {"email": "x@globex.test", "role": "viewer"}),
    Call("GET", "/members/{member}/invitations"),
    Call("DELETE", "/members/{member}/invitations/{invitation_id}"),
]
MATRIX_KEYS = {(c.method, c.path) for c in MEMBER_ROUTES}


def _state(session: Session) -> tuple[object, ...]:
    """What a refused call must leave as it was."""
    session.expire_all()
    return (
        session.scalar(select(func.count()).select_from(Project)),
        session.scalar(select(func.count()).select_from(Invitation)
                       .where(Invitation.revoked_at.is_(None))),
        tuple(session.execute(select(Membership.user_id, Membership.member_id, Membership.role)
                              .order_by(Membership.user_id, Membership.member_id)).all()),
        session.scalar(select(func.count()).select_from(AuditEvent)
                       .where(AuditEvent.outcome == Outcome.success)),
    )


@pytest.mark.parametrize("call", MEMBER_ROUTES, ids=lambda c: f"{c.method} {c.path}")
@pytest.mark.parametrize("role", ["manager", "researcher", "viewer"])
def test_another_members_people_get_404_on_every_member_route_and_change_nothing(
        *, app_client: TestClient, settings: Settings, session: Session, world: World,
        call: Call, role: str) -> None:
    outsider = getattr(world.cast, role)  # of acme
    before = _state(session)
    answer = app_client.request(call.method, call.url(world),
                                headers=auth_headers(settings, outsider), json=call.body)
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"] == PROBLEM
    # word for word what a member that does not exist answers
    absent = app_client.request(call.method, call.url(world).replace("globex", "absent"),
                                headers=auth_headers(settings, outsider), json=call.body)
    assert absent.json()["detail"] == answer.json()["detail"].replace("globex", "absent")
    assert _state(session) == before
    # the control: the same call by globex's manager (or an admin) is not refused
    insider = world.cast.admin if call.admin_only else world.cast.globex_manager
    answer = app_client.request(call.method, call.url(world),
                                headers=auth_headers(settings, insider), json=call.body)
    assert answer.status_code < 300, answer.text


def _member_routes() -> list[tuple[str, str]]:
    """(method, path) of every route under /members/{member}, whoever wrote it (as the
    OpenAPI document lists them)."""
    app = create_app(Settings(secret_key="x" * 40), database=Database("sqlite://"))
    return sorted(
        (method.upper(), path.removeprefix(API_PREFIX))
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(f"{API_PREFIX}/members/{{member}}")
        for method in operations
    )


@pytest.mark.parametrize(("method", "path"), _member_routes())
def test_no_member_route_discloses_another_members_objects(
        app_client: TestClient, settings: Settings, world: World, method: str,
        path: str) -> None:
    """Also the routes of other domains (usage, allocations, jobs...) added later."""
    url = API_PREFIX + path.replace("{member}", "globex")
    for name in ("project", "user_id", "invitation_id"):
        url = url.replace(f"{{{name}}}", "1")
    url = url.replace("{", "").replace("}", "")  # any other parameter: a plausible value
    answer = app_client.request(method, url, headers=auth_headers(settings, world.cast.manager),
                                json={})
    assert answer.status_code == 404, (method, path, answer.text)
    assert answer.headers["content-type"] == PROBLEM


def test_the_matrix_holds_every_route_of_the_member_domain() -> None:
    ours = {(m, p) for m, p in _member_routes()
            if p.split("/")[3:4] in ([], ["users"], ["projects"], ["invitations"],
                                     ["identities"])
            and p.split("/")[5:6] != ["webhooks"]}  # their own domain: tests/webhooks
    assert ours == MATRIX_KEYS


# Consortium-wide routes: a member's people are refused (403: these exist for everyone), an
# admin is not. {cluster} names no configured cluster here: the admin's control gets 404.
CONSORTIUM_ROUTES = [
    Call("GET", "/audit"),
    Call("GET", "/reports/footprint"),
    Call("POST", "/clusters/{cluster}/sync"),
    Call("GET", "/users"),
    Call("POST", "/users", {"email": "new@consortium.test", "name": "New",
                            "password": "Tuna-Lantern-Quiet-Orbit-77"}),
    Call("PATCH", "/users/nobody@consortium.test", {"is_admin": True}),
    Call("GET", "/ledger/verification"),
]


@pytest.mark.parametrize("call", CONSORTIUM_ROUTES, ids=lambda c: f"{c.method} {c.path}")
@pytest.mark.parametrize("role", ["manager", "researcher", "viewer"])
def test_a_members_people_are_refused_the_consortium_wide_routes(
        *, app_client: TestClient, settings: Settings, session: Session, world: World,
        call: Call, role: str) -> None:
    before = _state(session)
    answer = app_client.request(call.method, call.url(world), json=call.body,
                                headers=auth_headers(settings, getattr(world.cast, role)))
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert _state(session) == before
    control = app_client.request(call.method, call.url(world), json=call.body,
                                 headers=auth_headers(settings, world.cast.admin))
    assert control.status_code not in (401, 403), control.text


def test_a_manager_lists_only_its_own_personal_tokens(
        app_client: TestClient, settings: Settings, world: World) -> None:
    theirs = app_client.post("/api/v1/me/tokens",
                             headers=auth_headers(settings, world.cast.globex_manager),
                             json={"name": "reporting", "scopes": ["usage:read"]})
    assert theirs.status_code == 201, theirs.text
    mine = auth_headers(settings, world.cast.manager)
    listed = app_client.get("/api/v1/me/tokens", headers=mine)
    assert listed.status_code == 200 and listed.json()["items"] == []
    answer = app_client.delete(f"/api/v1/me/tokens/{theirs.json()['id']}", headers=mine)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == PROBLEM


def test_a_managers_token_with_narrow_scopes_cannot_manage_its_own_member(
        app_client: TestClient, settings: Settings, world: World) -> None:
    minted = app_client.post("/api/v1/me/tokens",
                             headers=auth_headers(settings, world.cast.manager),
                             json={"name": "reporting", "scopes": ["usage:read"]})
    assert minted.status_code == 201, minted.text
    token = {"Authorization": f"Bearer {minted.json()['token']}"}
    assert app_client.get("/api/v1/members/acme", headers=token).status_code == 200
    assert app_client.get("/api/v1/members/acme/users", headers=token).status_code == 403
    assert app_client.post("/api/v1/members/acme/invitations", headers=token, json={
        "email": "x@acme.test", "role": "viewer"}).status_code == 403


def test_an_admins_token_confined_to_a_member_is_no_admin_token(
        app_client: TestClient, settings: Settings, session: Session, world: World) -> None:
    session.add(Membership(user_id=world.cast.admin.id, member_id=world.cast.acme.id,
                           role=Role.manager))
    session.flush()
    minted = app_client.post("/api/v1/me/tokens",
                             headers=auth_headers(settings, world.cast.admin),
                             json={"name": "acme only", "scopes": ["members:manage"],
                                   "member_id": world.cast.acme.id})
    assert minted.status_code == 201, minted.text
    token = {"Authorization": f"Bearer {minted.json()['token']}"}
    assert [m["slug"] for m in app_client.get("/api/v1/members", headers=token).json()] == [
        "acme"]
    assert app_client.get("/api/v1/members/globex", headers=token).status_code == 404
    assert app_client.get("/api/v1/audit", headers=token).status_code == 403


# --- every error status is problem+json ----------------------------------------------------


def test_401_403_404_405_409_422_all_answer_problem_json(
        app_client: TestClient, settings: Settings, world: World) -> None:
    admin = auth_headers(settings, world.cast.admin)
    viewer = auth_headers(settings, world.cast.viewer)
    answers = {
        401: app_client.get("/api/v1/members"),
        403: app_client.post("/api/v1/members/acme/projects", headers=viewer,
                             json={"slug": "px", "name": "P", "domain": "health"}),
        404: app_client.get("/api/v1/members/nowhere", headers=admin),
        405: app_client.put("/api/v1/members", headers=admin, json={}),
        409: app_client.post("/api/v1/members", headers=admin,
                             json={"slug": "acme", "name": "A", "kind": "company"}),
        422: app_client.post("/api/v1/members", headers=admin, json={"slug": "acme"}),
    }
    for status, answer in answers.items():
        assert answer.status_code == status, (status, answer.text)
        assert answer.headers["content-type"] == PROBLEM, status
        body = answer.json()
        assert (body["status"], body["instance"]) == (status, answer.request.url.path)
        assert body["title"] and body["request_id"] == answer.headers["x-request-id"]
    assert answers[401].headers["www-authenticate"] == "Bearer"
    assert {"loc": ["body", "name"], "msg": "Field required", "type": "missing"} in \
        answers[422].json()["errors"]


def test_every_member_route_documents_the_errors_it_can_return(
        settings: Settings, database: Database) -> None:
    schema = create_app(settings, database=database).openapi()
    for path, item in schema["paths"].items():
        if not path.startswith(("/api/v1/members", "/api/v1/invitations", "/api/v1/audit",
                                "/api/v1/clusters", "/api/v1/reports/footprint",
                                "/api/v1/users", "/api/v1/ledger")):
            continue
        for method, operation in item.items():
            documented = set(operation["responses"])
            public = path.startswith("/api/v1/invitations")
            assert public or "401" in documented, (method, path)
            if path.startswith("/api/v1/members/{member}"):
                assert "404" in documented, (method, path)
            if method in ("post", "patch", "delete") and not public:
                assert "403" in documented, (method, path)
