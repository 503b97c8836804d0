"""`GET /me` reports the scopes the request's credential holds: its own, within what the
user's roles (or admin flag) allow, never the full list a login token nominally carries."""

from __future__ import annotations

import pytest
from factories import auth_headers, make_member, make_user
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from consortium.authz import ALL_SCOPES, Principal, Scope, require
from consortium.errors import DomainError
from consortium.models import Membership, Role
from gateway.settings import Settings

ME, TOKENS = "/api/v1/me", "/api/v1/me/tokens"


def _scopes(client: TestClient, headers: dict[str, str]) -> list[str]:
    answer = client.get(ME, headers=headers)
    assert answer.status_code == 200, answer.text
    scopes: list[str] = answer.json()["scopes"]
    return scopes


@pytest.mark.parametrize(("role", "held"), [
    (Role.manager, ["jobs:read", "jobs:write", "members:manage", "usage:read"]),
    (Role.researcher, ["jobs:read", "jobs:write", "usage:read"]),
    (Role.viewer, ["usage:read"]),
])
def test_a_login_holds_what_the_role_allows(
        app_client: TestClient, session: Session, settings: Settings, role: Role,
        held: list[str]) -> None:
    user = make_user(session, roles={make_member(session): role})
    assert _scopes(app_client, auth_headers(settings, user)) == held


def test_an_admin_login_holds_every_scope_and_an_account_without_role_none(
        app_client: TestClient, session: Session, settings: Settings) -> None:
    assert _scopes(app_client, auth_headers(settings, make_user(session, admin=True))) == \
        sorted(ALL_SCOPES)
    assert _scopes(app_client, auth_headers(settings, make_user(session))) == []


def test_a_token_holds_its_subset_and_loses_what_a_lowered_role_no_longer_allows(
        app_client: TestClient, session: Session, settings: Settings) -> None:
    member = make_member(session)
    user = make_user(session, roles={member: Role.manager})
    minted = app_client.post(TOKENS, headers=auth_headers(settings, user),
                             json={"name": "ci", "scopes": ["jobs:read", "usage:read"]})
    assert minted.status_code == 201, minted.text
    bearer = {"Authorization": f"Bearer {minted.json()['token']}"}
    assert _scopes(app_client, bearer) == ["jobs:read", "usage:read"]
    session.execute(update(Membership).where(Membership.user_id == user.id)
                    .values(role=Role.viewer))
    session.flush()
    assert _scopes(app_client, bearer) == ["usage:read"]


def test_a_token_minted_with_jobs_read_alone_holds_nothing_once_its_owner_is_a_viewer(
        app_client: TestClient, session: Session, settings: Settings) -> None:
    member = make_member(session)
    user = make_user(session, roles={member: Role.manager})
    minted = app_client.post(TOKENS, headers=auth_headers(settings, user),
                             json={"name": "ci", "scopes": ["jobs:read"]})
    assert minted.status_code == 201, minted.text
    session.execute(update(Membership).where(Membership.user_id == user.id)
                    .values(role=Role.viewer))
    session.flush()
    assert _scopes(app_client, {"Authorization": f"Bearer {minted.json()['token']}"}) == []


def _can(principal: Principal, scope: Scope, member_id: int) -> bool:
    try:
        require(principal, scope, member_id)
    except DomainError:
        return False
    return True


def test_a_token_confined_to_a_member_holds_no_admin_right_but_what_its_role_there_allows() -> None:
    # an admin's `admin` scope stands for every other scope (has_scope), within its roles
    principal = Principal(user_id=1, email="root@example.test", is_admin=True,
                          roles={7: Role.researcher, 8: Role.manager},
                          scopes=frozenset({Scope.admin, Scope.members_manage}),
                          token_member_id=7, via="pat")
    held = {Scope.jobs_read, Scope.jobs_write, Scope.usage_read}
    assert principal.held_scopes() == held
    assert {s for s in Scope if _can(principal, s, 7)} == held
    assert not principal.acts_as_admin


def test_an_admins_unconfined_admin_token_holds_every_scope() -> None:
    unconfined = Principal(user_id=1, email="root@example.test", is_admin=True, roles={},
                           scopes=frozenset({Scope.admin}), via="pat")
    assert unconfined.held_scopes() == ALL_SCOPES
    assert all(_can(unconfined, s, 42) for s in Scope) and unconfined.acts_as_admin
    demoted = Principal(user_id=1, email="root@example.test", is_admin=False, roles={},
                        scopes=frozenset({Scope.admin}), via="pat")
    assert demoted.held_scopes() == frozenset()
