"""Personal access tokens: scoped, shown once, stored hashed, refused once expired or revoked."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from factories import auth_headers, make_member, make_user
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium import authz
from consortium.authz import Principal, Scope
from consortium.base import utcnow
from consortium.errors import PermissionDenied
from consortium.models import AccessToken, AuditEvent, Member, MemberStatus, Role, User
from consortium.tokens import MAX_ACTIVE_PATS, token_hash
from gateway.auth.principal import read_principal
from gateway.settings import Settings

TOKENS = "/api/v1/me/tokens"


def _mint(client: TestClient, settings: Settings, user: User, **body: Any) -> Any:
    body.setdefault("name", "ci")
    return client.post(TOKENS, json=body, headers=auth_headers(settings, user))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _principal(client: TestClient, session: Session, settings: Settings, token: str,
               ) -> Principal:
    """The principal the gateway builds for a request carrying `token`."""
    return read_principal(session, token, settings, oidc=None).principal


def test_token_is_shown_once_at_creation_and_never_listed(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    member = make_member(session)
    user = make_user(session, roles={member: Role.researcher})

    created = _mint(app_client, settings, user, scopes=["jobs:read", "jobs:write"])

    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("hpcgw_pat_")
    assert created.json()["display_prefix"] == token[:14] + "…"
    listed = app_client.get(TOKENS, headers=auth_headers(settings, user))
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()["items"]] == ["ci"]
    assert token not in listed.text
    assert "token" not in listed.json()["items"][0]


def test_only_the_hash_of_the_token_is_stored(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})
    token = _mint(app_client, settings, user, scopes=["usage:read"]).json()["token"]

    row = session.scalars(select(AccessToken)).one()

    assert row.token_hash == token_hash(token)
    assert token[len("hpcgw_pat_"):] not in repr(
        [getattr(row, c.key) for c in AccessToken.__table__.columns]
    )


def test_token_authenticates_with_its_scopes_and_default_expiry(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.manager})
    created = _mint(app_client, settings, user, scopes=["usage:read"]).json()

    me = app_client.get("/api/v1/me", headers=_bearer(created["token"]))

    assert me.status_code == 200
    assert (me.json()["via"], me.json()["scopes"]) == ("pat", ["usage:read"])
    lifetime = (datetime.fromisoformat(created["expires_at"])
                - datetime.fromisoformat(created["created_at"]))
    assert lifetime == timedelta(days=90)


def test_managers_read_only_token_cannot_manage_the_member(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    member = make_member(session)
    user = make_user(session, roles={member: Role.manager})
    token = _mint(app_client, settings, user, scopes=["usage:read"]).json()["token"]

    principal = _principal(app_client, session, settings, token)

    authz.require(principal, Scope.usage_read, member.id)
    with pytest.raises(PermissionDenied):
        authz.require(principal, Scope.members_manage, member.id)
    assert authz.member_ids_for(principal, Scope.jobs_write) == frozenset()


def test_viewer_cannot_mint_a_token_with_write_scopes(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})

    refused = _mint(app_client, settings, user, scopes=["usage:read", "jobs:write"])

    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["scopes"] == ["jobs:write"]
    assert session.scalars(select(AccessToken)).all() == []
    assert _mint(app_client, settings, user, scopes=["usage:read"]).status_code == 201


def test_only_admins_mint_admin_tokens(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    manager = make_user(session, roles={make_member(session): Role.manager})
    admin = make_user(session, admin=True)

    assert _mint(app_client, settings, manager, scopes=["admin"]).status_code == 403
    assert _mint(app_client, settings, admin, scopes=["admin"]).status_code == 201


def test_token_confined_to_a_member_sees_only_that_member(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    first, second = make_member(session), make_member(session)
    user = make_user(session, roles={first: Role.researcher, second: Role.viewer})

    created = _mint(app_client, settings, user, scopes=["jobs:read"], member_id=first.id)
    assert created.status_code == 201
    principal = _principal(app_client, session, settings, created.json()["token"])

    assert principal.token_member_id == first.id
    assert principal.visible_member_ids() == {first.id}
    # confined to the member where the user is a viewer, write scopes are beyond its role
    assert _mint(app_client, settings, user, scopes=["jobs:write"],
                 member_id=second.id).status_code == 403


def test_token_cannot_be_confined_to_someone_elses_member(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    other = make_member(session)
    user = make_user(session, roles={make_member(session): Role.manager})

    response = _mint(app_client, settings, user, scopes=["usage:read"], member_id=other.id)

    assert response.status_code == 422


def test_a_token_cannot_mint_tokens(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.manager})
    token = _mint(app_client, settings, user, scopes=["usage:read"]).json()["token"]

    response = app_client.post(TOKENS, json={"name": "x", "scopes": ["usage:read"]},
                               headers=_bearer(token))

    assert response.status_code == 403


@pytest.mark.parametrize("expiry", [
    {"expires_in_days": 366},
    {"expires_in_days": 0},
    {"expires_at": "2000-01-01T00:00:00Z"},
    {"expires_at": "2999-01-01T00:00:00Z"},
    {"expires_at": "2999-01-01T00:00:00"},
    {"expires_in_days": 3, "expires_at": "2999-01-01T00:00:00Z"},
])
def test_token_expiry_must_be_in_the_coming_year(
    app_client: TestClient, session: Session, settings: Settings, expiry: dict[str, Any]
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})

    response = _mint(app_client, settings, user, scopes=["usage:read"], **expiry)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_unknown_scope_and_extra_fields_are_refused(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})

    assert _mint(app_client, settings, user, scopes=["root"]).status_code == 422
    assert _mint(app_client, settings, user, scopes=["usage:read"],
                 user_id=1).status_code == 422


def test_expired_token_is_refused(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})
    token = _mint(app_client, settings, user, scopes=["usage:read"]).json()["token"]
    session.execute(update(AccessToken).values(expires_at=utcnow() - timedelta(seconds=1)))

    response = app_client.get("/api/v1/me", headers=_bearer(token))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"] == "this access token has expired"


def test_revoked_token_is_refused_from_the_next_request(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})
    created = _mint(app_client, settings, user, scopes=["usage:read"]).json()
    assert app_client.get("/api/v1/me", headers=_bearer(created["token"])).status_code == 200

    deleted = app_client.delete(f"{TOKENS}/{created['id']}", headers=auth_headers(settings, user))

    assert deleted.status_code == 204
    refused = app_client.get("/api/v1/me", headers=_bearer(created["token"]))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "this access token has been revoked"
    assert app_client.get(TOKENS, headers=auth_headers(settings, user)).json()["items"] == []
    assert session.scalars(
        select(AuditEvent.action).where(AuditEvent.target_type == "access_token")
        .order_by(AuditEvent.id)
    ).all() == ["token.create", "token.revoke"]


def test_revoking_all_tokens_refuses_every_one(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})
    tokens = [_mint(app_client, settings, user, scopes=["usage:read"]).json()["token"]
              for _ in range(2)]

    assert app_client.delete(TOKENS, headers=auth_headers(settings, user)).status_code == 204

    for token in tokens:
        assert app_client.get("/api/v1/me", headers=_bearer(token)).status_code == 401


def test_another_users_token_cannot_be_revoked(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    member = make_member(session)
    owner = make_user(session, roles={member: Role.viewer})
    intruder = make_user(session, roles={member: Role.manager})
    created = _mint(app_client, settings, owner, scopes=["usage:read"]).json()

    response = app_client.delete(f"{TOKENS}/{created['id']}",
                                 headers=auth_headers(settings, intruder))

    assert response.status_code == 404
    assert app_client.get("/api/v1/me", headers=_bearer(created["token"])).status_code == 200


def test_a_user_holds_a_bounded_number_of_tokens(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})
    session.add_all(
        AccessToken(user_id=user.id, name=f"t{i}", token_hash=f"{i:064x}", display_prefix="x",
                    scopes=["usage:read"])
        for i in range(MAX_ACTIVE_PATS)
    )
    session.flush()

    assert _mint(app_client, settings, user, scopes=["usage:read"]).status_code == 409


def test_last_use_is_recorded_at_most_once_a_minute(
    app_client: TestClient, session: Session, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})
    created = _mint(app_client, settings, user, scopes=["usage:read"]).json()
    assert created["last_used_at"] is None

    def use_at(seconds_later: float) -> datetime | None:
        """A use of the token this long after the first; its last use as then recorded."""
        if seconds_later:
            moved = first_use + timedelta(seconds=seconds_later)
            for clock in ("gateway.auth.principal.utcnow", "gateway.auth.authenticator.utcnow"):
                monkeypatch.setattr(clock, lambda: moved)
        app_client.get("/api/v1/me", headers=_bearer(created["token"]))
        row = session.get_one(AccessToken, created["id"])
        session.refresh(row)
        return row.last_used_at

    first_use = utcnow()
    recorded = use_at(0)
    assert recorded is not None and recorded >= first_use
    first_use = recorded
    assert use_at(30) == first_use
    assert use_at(59) == first_use
    assert use_at(61) == first_use + timedelta(seconds=61)


def test_member_suspension_takes_effect_on_the_next_request(
    app_client: TestClient, session: Session, settings: Settings
) -> None:
    kept, suspended = make_member(session), make_member(session)
    user = make_user(session, roles={kept: Role.manager, suspended: Role.manager})
    token = _mint(app_client, settings, user, scopes=["jobs:read", "usage:read"]).json()["token"]
    assert set(_principal(app_client, session, settings, token).roles) == {
        kept.id, suspended.id
    }

    session.execute(update(Member).where(Member.id == suspended.id)
                    .values(status=MemberStatus.suspended))

    principal = _principal(app_client, session, settings, token)
    assert set(principal.roles) == {kept.id}
    assert not authz.can_see_member(principal, suspended.id)
    me = app_client.get("/api/v1/me", headers=_bearer(token)).json()
    assert {m["member_id"]: m["member_status"] for m in me["memberships"]} == {
        kept.id: "active", suspended.id: "suspended"
    }


@pytest.mark.parametrize("header", [
    None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-jwt", "Bearer hpcgw_pat_unknown",
])
def test_missing_or_invalid_credentials_get_401_problem(
    app_client: TestClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}

    response = app_client.get(TOKENS, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("name", ["", "x" * 101, "tab\there", "nul\x00"])
def test_token_name_is_one_short_line(
    app_client: TestClient, session: Session, settings: Settings, name: str
) -> None:
    user = make_user(session, roles={make_member(session): Role.viewer})

    assert _mint(app_client, settings, user, name=name, scopes=["usage:read"]).status_code == 422
