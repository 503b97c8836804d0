"""POST /auth/token with the password grant: success, refusals, timing, rehash, audit."""

from __future__ import annotations

import statistics
import time

from argon2 import PasswordHasher
from auth_helpers import TOKEN_URL, MakeClient, login
from factories import PASSWORD, make_member, make_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.models import AuditEvent, LoginThrottle, Outcome, Role
from consortium.passwords import verify_password
from gateway.auth.sessions import verify_access_token
from gateway.settings import LoginThrottleSettings, Settings

PROBLEM = "application/problem+json"


def test_right_password_returns_bearer_and_refresh_tokens(
    make_client: MakeClient, session: Session, settings: Settings
) -> None:
    user = make_user(session, email="Alice@Example.test")
    response = login(make_client(), "alice@example.TEST", PASSWORD)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert body["refresh_token"].startswith("hpcgw_rt_")
    assert verify_access_token(settings, body["access_token"])[0] == user.id
    assert response.headers["cache-control"] == "no-store"


def test_access_token_from_login_opens_the_me_route(
    make_client: MakeClient, session: Session
) -> None:
    member = make_member(session, slug="acme")
    make_user(session, email="bob@example.test", roles={member: Role.researcher})
    client = make_client()
    token = login(client, "bob@example.test", PASSWORD).json()["access_token"]

    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})

    assert me.status_code == 200
    assert me.json()["email"] == "bob@example.test"
    assert me.json()["via"] == "session"
    assert [(m["member_slug"], m["role"]) for m in me.json()["memberships"]] == [
        ("acme", "researcher")
    ]


def test_wrong_password_and_unknown_email_get_the_same_problem(
    make_client: MakeClient, session: Session
) -> None:
    make_user(session, email="carol@example.test")
    client = make_client()

    wrong = login(client, "carol@example.test", "not the password")
    unknown = login(client, "nobody@example.test", PASSWORD)

    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"] == "incorrect email or password"
        assert response.json()["error"] == "invalid_grant"
    assert {k: v for k, v in wrong.json().items() if k != "request_id"} == {
        k: v for k, v in unknown.json().items() if k != "request_id"
    }


def test_unknown_email_and_wrong_password_take_comparable_time(
    make_client: MakeClient, session: Session
) -> None:
    make_user(session, email="dave@example.test")
    client = make_client(login_throttle=LoginThrottleSettings(
        max_failures_per_account=1000, max_failures_per_address=1000
    ))
    login(client, "warm@example.test", "x")  # first request pays imports and caches
    unknown: list[float] = []
    wrong: list[float] = []
    for i in range(6):
        for email, times in (((f"ghost{i}@example.test"), unknown), ("dave@example.test", wrong)):
            started = time.perf_counter()
            assert login(client, email, f"guess-{i}").status_code == 401
            times.append(time.perf_counter() - started)

    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 2.0, (unknown, wrong)


def test_failed_login_is_audited_and_counted_although_the_answer_is_an_error(
    make_client: MakeClient, session: Session
) -> None:
    user = make_user(session, email="erin@example.test")
    assert login(make_client(), "erin@example.test", "nope", address="10.9.9.9").status_code == 401

    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login")).one()
    assert (event.outcome, event.actor, event.target_id) == (
        Outcome.denied, "erin@example.test", str(user.id)
    )
    assert event.client_addr == "10.9.9.9"
    counters = dict(session.execute(select(LoginThrottle.key, LoginThrottle.failures)).all())
    assert counters == {"account:erin@example.test": 1, "addr:10.9.9.9": 1}


def test_successful_login_is_audited(make_client: MakeClient, session: Session) -> None:
    user = make_user(session, email="fay@example.test")
    assert login(make_client(), "fay@example.test", PASSWORD).status_code == 200

    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login")).one()
    assert (event.outcome, event.actor_user_id, event.target_id) == (
        Outcome.success, None, str(user.id)
    )


def test_disabled_account_cannot_log_in(make_client: MakeClient, session: Session) -> None:
    user = make_user(session, email="gil@example.test")
    user.is_active = False
    session.flush()

    response = login(make_client(), "gil@example.test", PASSWORD)

    assert response.status_code == 401
    assert response.json()["detail"] == "this account is disabled"


def test_login_rehashes_a_password_hashed_with_older_parameters(
    make_client: MakeClient, session: Session
) -> None:
    user = make_user(session, email="hal@example.test")
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    user.password_hash = weak
    session.flush()

    assert login(make_client(), "hal@example.test", PASSWORD).status_code == 200

    session.refresh(user)
    assert user.password_hash != weak
    assert "m=65536,t=3,p=4" in (user.password_hash or "")
    assert verify_password(user.password_hash, PASSWORD)


def test_password_grant_without_password_is_a_validation_problem(
    make_client: MakeClient,
) -> None:
    response = make_client().post(
        TOKEN_URL, data={"grant_type": "password", "username": "x@example.test"}
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


def test_unsupported_grant_type_is_a_validation_problem(make_client: MakeClient) -> None:
    response = make_client().post(TOKEN_URL, data={"grant_type": "client_credentials"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "grant_type"]


def test_oversized_email_is_refused_before_any_lookup(make_client: MakeClient) -> None:
    response = login(make_client(), "a" * 400 + "@example.test", PASSWORD)

    assert response.status_code == 422


def test_email_with_control_characters_is_refused_before_any_lookup(
    make_client: MakeClient,
) -> None:
    response = login(make_client(), "nul\x00@example.test", PASSWORD)

    assert response.status_code == 422


def test_docs_authorize_form_logs_in(make_client: MakeClient, session: Session) -> None:
    """/docs "Authorize" posts the OAuth2 password form with its own extra fields."""
    make_user(session, email="swagger@example.test")
    client = make_client()
    security = client.get("/openapi.json").json()["components"]["securitySchemes"]
    token_url = security["login"]["flows"]["password"]["tokenUrl"]

    response = client.post(token_url, data={
        "grant_type": "password", "username": "swagger@example.test", "password": PASSWORD,
        "scope": "", "client_id": "", "client_secret": "",
    })

    assert response.status_code == 200
    assert security["token"] == {
        "type": "http", "scheme": "bearer",
        "description": "a personal access token (hpcgw_pat_...) or an OIDC provider's token",
    }


def test_authenticated_routes_declare_their_security_and_public_ones_do_not(
    make_client: MakeClient,
) -> None:
    paths = make_client().get("/openapi.json").json()["paths"]

    assert paths["/api/v1/me"]["get"]["security"] == [{"login": []}, {"token": []}]
    assert paths["/api/v1/me/tokens"]["post"]["security"] == [{"login": []}, {"token": []}]
    assert "security" not in paths["/api/v1/auth/token"]["post"]
    assert set(paths["/api/v1/auth/token"]["post"]["responses"]) == {"200", "401", "413", "422",
                                                                     "429"}
