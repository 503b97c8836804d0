"""Refresh tokens: single use, rotated, a reuse revokes the login; logout revokes it too."""

from __future__ import annotations

from datetime import timedelta

from auth_helpers import MakeClient, login, refresh
from factories import PASSWORD, make_user
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import AuditEvent, Outcome, RefreshToken, User
from consortium.tokens import token_hash


def _login(client: TestClient, session: Session, email: str) -> dict[str, str]:
    make_user(session, email=email)
    response = login(client, email, PASSWORD)
    assert response.status_code == 200
    body: dict[str, str] = response.json()
    return body


def test_refresh_returns_new_tokens_and_uses_up_the_old_one(
    make_client: MakeClient, session: Session
) -> None:
    client = make_client()
    first = _login(client, session, "ivy@example.test")

    renewed = refresh(client, first["refresh_token"])

    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["refresh_token"] != first["refresh_token"]
    assert renewed.headers["cache-control"] == "no-store"
    me = client.get("/api/v1/me",
                    headers={"Authorization": f"Bearer {renewed.json()['access_token']}"})
    assert me.json()["email"] == "ivy@example.test"
    old = session.scalars(select(RefreshToken).where(
        RefreshToken.token_hash == token_hash(first["refresh_token"])
    )).one()
    assert old.used_at is not None


def test_refresh_token_is_stored_hashed(make_client: MakeClient, session: Session) -> None:
    tokens = _login(make_client(), session, "jay@example.test")

    stored = session.scalars(select(RefreshToken.token_hash)).all()

    assert stored == [token_hash(tokens["refresh_token"])]
    assert tokens["refresh_token"] not in stored


def test_reused_refresh_token_revokes_the_whole_family(
    make_client: MakeClient, session: Session
) -> None:
    client = make_client()
    first = _login(client, session, "kim@example.test")
    second = refresh(client, first["refresh_token"]).json()

    reuse = refresh(client, first["refresh_token"])  # a thief replays the stolen token

    assert reuse.status_code == 401
    assert reuse.headers["www-authenticate"] == "Bearer"
    assert reuse.json()["error"] == "invalid_grant"
    # the legitimate holder's current token is dead too: the thief's copy is worth nothing
    assert refresh(client, second["refresh_token"]).status_code == 401
    assert all(t.revoked_at is not None for t in session.scalars(select(RefreshToken)))
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "auth.refresh_reuse")
    ).one()
    assert (event.outcome, event.actor) == (Outcome.denied, "kim@example.test")


def test_other_logins_survive_a_reuse_in_one_family(
    make_client: MakeClient, session: Session
) -> None:
    client = make_client()
    laptop = _login(client, session, "lea@example.test")
    phone = login(client, "lea@example.test", PASSWORD).json()
    refresh(client, laptop["refresh_token"])

    assert refresh(client, laptop["refresh_token"]).status_code == 401
    assert refresh(client, phone["refresh_token"]).status_code == 200


def test_expired_and_unknown_refresh_tokens_are_refused(
    make_client: MakeClient, session: Session
) -> None:
    client = make_client()
    tokens = _login(client, session, "max@example.test")
    session.execute(update(RefreshToken).values(expires_at=utcnow() - timedelta(seconds=1)))

    expired = refresh(client, tokens["refresh_token"])
    unknown = refresh(client, "hpcgw_rt_" + "A" * 43)

    for response in (expired, unknown):
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid or expired refresh token"


def test_logout_revokes_the_login(make_client: MakeClient, session: Session) -> None:
    client = make_client()
    first = _login(client, session, "ned@example.test")
    second = refresh(client, first["refresh_token"]).json()

    response = client.post("/api/v1/auth/logout", data={"refresh_token": first["refresh_token"]})

    assert response.status_code == 204
    assert refresh(client, second["refresh_token"]).status_code == 401
    assert session.scalars(select(AuditEvent.action).where(
        AuditEvent.action == "auth.logout"
    )).all() == ["auth.logout"]


def test_logout_with_an_unknown_token_answers_the_same(make_client: MakeClient) -> None:
    response = make_client().post("/api/v1/auth/logout", data={"refresh_token": "nope"})

    assert response.status_code == 204


def test_disabled_account_cannot_refresh(make_client: MakeClient, session: Session) -> None:
    client = make_client()
    tokens = _login(client, session, "oli@example.test")
    session.execute(update(User).where(User.email == "oli@example.test").values(is_active=False))

    assert refresh(client, tokens["refresh_token"]).status_code == 401
