"""Invitations: who may invite, single use, expiry, revocation, and the mail on a real SMTP
server (aiosmtpd on loopback)."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

import httpx
import pytest
from factories import PASSWORD, Cast, audit_events, make_member
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium import passwords
from consortium.audit import RequestContext
from consortium.base import utcnow
from consortium.models import Invitation, Membership, Role, User
from consortium.passwords import verify_password, weakness
from consortium.schemas import InvitationAccept, InvitationCreate
from consortium.service import (
    SIGN_IN_OR_CREATE,
    InvitationGone,
    accept_invitation,
    create_invitation,
    get_member,
)
from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings, SmtpSettings

NEW_PASSWORD = "a long enough passphrase"


def invite(client: TestClient, headers: dict[str, str], email: str = "new@acme.test",
           role: str = "researcher", member: str = "acme") -> dict[str, object]:
    answer = client.post(f"/api/v1/members/{member}/invitations", headers=headers,
                         json={"email": email, "role": role})
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


def token_of(invitation: dict[str, object]) -> str:
    link = invitation["link"]
    assert isinstance(link, str)
    return link.rsplit("/", 1)[1]


def accept(client: TestClient, token: str, **body: object) -> httpx.Response:
    return client.post(f"/api/v1/invitations/{token}/accept", json=body)


def test_manager_invites_and_without_smtp_gets_the_link_to_pass_on(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    invitation = invite(app_client, as_(cast.manager))
    assert invitation["mail"] == "not_configured"
    assert invitation["status"] == "pending"
    assert isinstance(invitation["link"], str)
    assert invitation["link"].startswith("http://testserver/ui/invitations/")
    token = token_of(invitation)
    assert len(token) >= 43  # 256 bits
    # only the token's SHA-256 is stored
    stored = session.scalar(select(Invitation).where(Invitation.id == invitation["id"]))
    assert stored is not None
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert stored.expires_at - stored.created_at == timedelta(days=7)
    [event] = audit_events(session, "invitation.create")
    assert (event.member_id, event.details) == (
        cast.acme.id, {"email": "new@acme.test", "role": "researcher"})


def test_invitation_list_shows_the_status_and_never_the_token(
        app_client: TestClient, cast: Cast, as_) -> None:
    token = token_of(invite(app_client, as_(cast.manager)))
    answer = app_client.get("/api/v1/members/acme/invitations", headers=as_(cast.manager))
    assert answer.status_code == 200
    [listed] = answer.json()
    assert (listed["email"], listed["status"]) == ("new@acme.test", "pending")
    assert token not in answer.text
    assert "link" not in listed and "token_hash" not in listed


@pytest.mark.parametrize("role", ["manager", "researcher", "viewer"])
def test_a_manager_may_invite_any_role_of_its_member(
        app_client: TestClient, cast: Cast, as_, role: str) -> None:
    assert invite(app_client, as_(cast.manager), role=role)["role"] == role


def test_researchers_and_viewers_cannot_invite(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    for user in (cast.researcher, cast.viewer):
        answer = app_client.post("/api/v1/members/acme/invitations", headers=as_(user),
                                 json={"email": "friend@acme.test", "role": "viewer"})
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
    assert session.scalar(select(Invitation)) is None
    assert [(e.action, e.outcome) for e in audit_events(session)] == [
        ("invitation.create", "denied")] * 2


def test_admin_invites_to_any_member(app_client: TestClient, cast: Cast, as_) -> None:
    assert invite(app_client, as_(cast.admin), member="globex", role="manager")["role"] == \
        "manager"


def test_accepting_creates_the_account_with_its_membership(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    token = token_of(invite(app_client, as_(cast.manager), email="Ada@Acme.test"))
    answer = accept(app_client, token, name="Ada Lovelace", password=NEW_PASSWORD)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"email": "Ada@Acme.test", "name": "Ada Lovelace",
                             "membership": {"member_id": cast.acme.id, "role": "researcher"}}
    user = session.scalar(select(User).where(User.email_normalized == "ada@acme.test"))
    assert user is not None and verify_password(user.password_hash, NEW_PASSWORD)
    [event] = audit_events(session, "invitation.accept")
    assert (event.actor, event.member_id, event.details["new_user"]) == (
        "Ada@Acme.test", cast.acme.id, True)
    # the new account works right away
    token_answer = app_client.post("/api/v1/auth/token", data={
        "grant_type": "password", "username": "ada@acme.test", "password": NEW_PASSWORD})
    if token_answer.status_code != 404:  # the login route exists once auth is in
        assert token_answer.status_code == 200, token_answer.text


def test_an_invitation_cannot_be_used_twice(app_client: TestClient, cast: Cast, as_) -> None:
    token = token_of(invite(app_client, as_(cast.manager)))
    assert accept(app_client, token, name="Ada", password=NEW_PASSWORD).status_code == 200
    again = accept(app_client, token, name="Eve", password="another long password")
    assert again.status_code == 410
    assert again.json()["type"] == "/problems/invitation-gone"
    assert again.headers["content-type"] == "application/problem+json"


def test_an_expired_invitation_cannot_be_used(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    invitation = invite(app_client, as_(cast.manager))
    session.execute(update(Invitation).where(Invitation.id == invitation["id"])
                    .values(expires_at=utcnow() - timedelta(seconds=1)))
    session.flush()
    answer = accept(app_client, token_of(invitation), name="Ada", password=NEW_PASSWORD)
    assert answer.status_code == 410
    assert "expired" in answer.json()["detail"]
    listed = app_client.get("/api/v1/members/acme/invitations", headers=as_(cast.manager))
    assert listed.json()[0]["status"] == "expired"
    assert session.scalar(select(User).where(User.email_normalized == "new@acme.test")) is None


def test_a_revoked_invitation_cannot_be_used(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    invitation = invite(app_client, as_(cast.manager))
    revoked = app_client.delete(f"/api/v1/members/acme/invitations/{invitation['id']}",
                                headers=as_(cast.manager))
    assert revoked.status_code == 204
    answer = accept(app_client, token_of(invitation), name="Ada", password=NEW_PASSWORD)
    assert answer.status_code == 410
    assert "revoked" in answer.json()["detail"]
    assert [e.action for e in audit_events(session)] == [
        "invitation.create", "invitation.revoke"]


def test_an_accepted_invitation_cannot_be_revoked(
        app_client: TestClient, cast: Cast, as_) -> None:
    invitation = invite(app_client, as_(cast.manager))
    accept(app_client, token_of(invitation), name="Ada", password=NEW_PASSWORD)
    answer = app_client.delete(f"/api/v1/members/acme/invitations/{invitation['id']}",
                               headers=as_(cast.manager))
    assert answer.status_code == 409


def test_an_unknown_token_answers_404(app_client: TestClient) -> None:
    answer = accept(app_client, "x" * 43, name="Ada", password=NEW_PASSWORD)
    assert answer.status_code == 404


def test_a_new_account_needs_a_password_of_twelve_characters_and_a_name(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    token = token_of(invite(app_client, as_(cast.manager)))
    short = accept(app_client, token, name="Ada", password="eleven char")
    assert short.status_code == 422
    assert short.json()["errors"][0]["loc"] == ["body", "password"]
    assert accept(app_client, token, password=NEW_PASSWORD).status_code == 422
    # the refusals did not use the invitation up
    assert accept(app_client, token, name="Ada", password=NEW_PASSWORD).status_code == 200


def test_a_weak_password_is_refused_with_the_estimators_advice(
        app_client: TestClient, cast: Cast, as_) -> None:
    token = token_of(invite(app_client, as_(cast.manager)))
    for weak in (" " * 12, "password1234"):
        answer = accept(app_client, token, name="Ada", password=weak)
        assert answer.status_code == 422, (weak, answer.text)
        [error] = answer.json()["errors"]
        assert (error["loc"], error["type"]) == (["body", "password"], "weak_password")
        assert "too easy to guess" in error["msg"]
    assert accept(app_client, token, name="Ada", password=NEW_PASSWORD).status_code == 200


def test_the_invited_email_is_no_password_for_the_new_account(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    email = "karim.haddad@lirmm.test"
    assert weakness(email) is None  # for an account of another email, a fine password
    token = token_of(invite(app_client, as_(cast.manager), email=email))
    answer = accept(app_client, token, name="K", password=email)
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert (error["loc"], error["type"]) == (["body", "password"], "weak_password")
    assert session.scalar(select(User).where(User.email_normalized == email)) is None
    assert accept(app_client, token, name="K", password=NEW_PASSWORD).status_code == 200


@pytest.fixture
def estimates(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords zxcvbn is asked to judge (tens of milliseconds each)."""
    judged: list[str] = []
    estimate = passwords.zxcvbn

    def counted(password: str, user_inputs: list[str]) -> object:
        judged.append(password)
        return estimate(password, user_inputs=user_inputs)

    monkeypatch.setattr(passwords, "zxcvbn", counted)
    return judged


def test_the_strength_is_judged_only_for_a_good_token(
        app_client: TestClient, cast: Cast, as_, estimates: list[str]) -> None:
    form = {"name": "Ada", "password": NEW_PASSWORD, "confirmation": NEW_PASSWORD}
    assert accept(app_client, "x" * 43, name="Ada", password=NEW_PASSWORD).status_code == 404
    assert app_client.post(f"/ui/invitations/{'x' * 43}", data=form).status_code == 404
    assert estimates == []
    token = token_of(invite(app_client, as_(cast.manager)))
    assert accept(app_client, token, name="Ada", password=NEW_PASSWORD).status_code == 200
    assert accept(app_client, token, name="Ada", password=NEW_PASSWORD).status_code == 410
    assert estimates == [NEW_PASSWORD]


# --- an email that already has an account: it joins only signed in as itself ---------------


def _pending(session: Session, invitation_id: object) -> bool:
    session.expire_all()
    stored = session.get(Invitation, invitation_id)
    return stored is not None and stored.accepted_at is None


def test_an_existing_account_is_not_joined_by_the_link_alone(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    """The attack: a manager invites another member's manager and the consortium admin, then
    accepts with an empty body, or with a name and a password of its choosing."""
    for victim in (cast.globex_manager, cast.admin):
        invitation = invite(app_client, as_(cast.manager), email=victim.email.upper(),
                            role="viewer")
        token = token_of(invitation)
        for body in ({}, {"name": "Mallory", "password": "attacker password 1"}):
            answer = accept(app_client, token, **body)
            assert answer.status_code == 401, answer.text
            assert answer.json()["type"] == "/problems/invitation-sign-in"
            assert answer.json()["detail"] == SIGN_IN_OR_CREATE
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "globex" not in answer.text and "member_id" not in answer.text
        assert _pending(session, invitation["id"])
        assert session.get(Membership, (victim.id, cast.acme.id)) is None
        assert verify_password(session.get_one(User, victim.id).password_hash, PASSWORD)
        assert session.get_one(User, victim.id).name == victim.email.split("@")[0]


def _problem(answer: httpx.Response) -> tuple[int, dict[str, object]]:
    """Status and body of a problem, without what differs per request."""
    body = {k: v for k, v in answer.json().items() if k not in ("instance", "request_id")}
    return answer.status_code, body


def test_refusals_are_the_same_whether_the_email_has_an_account_or_not(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    existing = token_of(invite(app_client, as_(cast.manager), email=cast.globex_manager.email))
    unknown = token_of(invite(app_client, as_(cast.manager), email="nobody@elsewhere.test"))
    # not signed in, nothing to create an account with
    assert _problem(accept(app_client, existing)) == _problem(accept(app_client, unknown))
    # signed in as someone else (the inviter)
    assert _problem(app_client.post(f"/api/v1/invitations/{existing}/accept", json={},
                                    headers=as_(cast.manager))) == \
        _problem(app_client.post(f"/api/v1/invitations/{unknown}/accept", json={},
                                 headers=as_(cast.manager)))
    # signed in and sending a name and a password
    with_password = {"name": "Mallory", "password": "attacker password 1"}
    assert _problem(app_client.post(f"/api/v1/invitations/{existing}/accept",
                                    json=with_password, headers=as_(cast.viewer))) == \
        _problem(app_client.post(f"/api/v1/invitations/{unknown}/accept",
                                 json=with_password, headers=as_(cast.viewer)))
    # a name and a password for an existing account: the refusal of an empty body, word for word
    assert _problem(accept(app_client, existing, **with_password)) == \
        _problem(accept(app_client, unknown))
    assert session.scalar(select(User).where(
        User.email_normalized == "nobody@elsewhere.test")) is None


def test_another_accounts_credential_is_refused(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    invitation = invite(app_client, as_(cast.manager), email=cast.globex_manager.email)
    for someone in (cast.manager, cast.admin, cast.researcher):
        answer = app_client.post(f"/api/v1/invitations/{token_of(invitation)}/accept",
                                 json={}, headers=as_(someone))
        assert answer.status_code == 403, answer.text
        assert "another email" in answer.json()["detail"]
    assert _pending(session, invitation["id"])
    assert session.get(Membership, (cast.manager.id, cast.acme.id)) is not None  # unchanged
    assert session.get(Membership, (cast.globex_manager.id, cast.acme.id)) is None


def test_a_presented_credential_must_be_valid(app_client: TestClient, cast: Cast, as_) -> None:
    token = token_of(invite(app_client, as_(cast.manager)))
    answer = app_client.post(f"/api/v1/invitations/{token}/accept",
                             json={"name": "Ada", "password": NEW_PASSWORD},
                             headers={"Authorization": "Bearer not-a-token"})
    assert answer.status_code == 401
    assert answer.json()["type"] == "/problems/unauthenticated"


def test_the_invited_account_signed_in_joins_and_sees_only_the_new_membership(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    dana = cast.globex_manager
    invitation = invite(app_client, as_(cast.manager), email=dana.email.upper(), role="viewer")
    path = f"/api/v1/invitations/{token_of(invitation)}/accept"
    refused = app_client.post(path, json={"name": "Dana", "password": NEW_PASSWORD},
                              headers=as_(dana))
    assert refused.status_code == 422  # signed in: the account keeps its name and password
    answer = app_client.post(path, json={}, headers=as_(dana))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"email": dana.email, "name": dana.name,
                             "membership": {"member_id": cast.acme.id, "role": "viewer"}}
    assert session.get(Membership, (dana.id, cast.acme.id)) is not None
    assert verify_password(session.get_one(User, dana.id).password_hash, PASSWORD)
    [event] = audit_events(session, "invitation.accept")
    assert (event.actor, event.details["new_user"]) == (dana.email, False)
    again = app_client.post(path, json={}, headers=as_(dana))
    assert again.status_code == 410


def test_a_personal_access_token_cannot_accept(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    dana = cast.globex_manager
    pat = app_client.post("/api/v1/me/tokens", headers=as_(dana),
                          json={"name": "ci", "scopes": ["usage:read"]}).json()["token"]
    invitation = invite(app_client, as_(cast.manager), email=dana.email)
    answer = app_client.post(f"/api/v1/invitations/{token_of(invitation)}/accept", json={},
                             headers={"Authorization": f"Bearer {pat}"})
    assert answer.status_code == 403
    assert "personal access token" in answer.json()["detail"]
    assert _pending(session, invitation["id"])


def test_the_invited_admin_joins_only_signed_in(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    token = token_of(invite(app_client, as_(cast.manager), email=cast.admin.email))
    assert accept(app_client, token).status_code == 401
    answer = app_client.post(f"/api/v1/invitations/{token}/accept", json={},
                             headers=as_(cast.admin))
    assert answer.status_code == 200, answer.text
    assert answer.json()["membership"] == {"member_id": cast.acme.id, "role": "researcher"}


def test_inviting_someone_already_in_the_member_is_a_conflict_whatever_the_case(
        app_client: TestClient, cast: Cast, as_) -> None:
    answer = app_client.post("/api/v1/members/acme/invitations", headers=as_(cast.manager),
                             json={"email": "VIEWER@acme.test", "role": "manager"})
    assert answer.status_code == 409


def test_a_second_pending_invitation_for_the_same_email_is_a_conflict(
        app_client: TestClient, cast: Cast, as_) -> None:
    invitation = invite(app_client, as_(cast.manager), email="ada@acme.test")
    answer = app_client.post("/api/v1/members/acme/invitations", headers=as_(cast.manager),
                             json={"email": "Ada@acme.test", "role": "viewer"})
    assert answer.status_code == 409
    app_client.delete(f"/api/v1/members/acme/invitations/{invitation['id']}",
                      headers=as_(cast.manager))
    invite(app_client, as_(cast.manager), email="Ada@acme.test")


def test_a_suspended_member_cannot_invite(app_client: TestClient, cast: Cast, as_) -> None:
    app_client.patch("/api/v1/members/acme", headers=as_(cast.admin), json={"status": "suspended"})
    answer = app_client.post("/api/v1/members/acme/invitations", headers=as_(cast.admin),
                             json={"email": "ada@acme.test", "role": "viewer"})
    assert answer.status_code == 409


def test_invitation_lifetime_comes_from_the_settings(
        settings: Settings, database: Database, cast: Cast, as_, session: Session) -> None:
    short = settings.model_copy(update={"invitation_ttl": timedelta(hours=2)})
    with TestClient(create_app(short, database=database)) as client:
        invitation = invite(client, as_(cast.manager))
    stored = session.get(Invitation, invitation["id"])
    assert stored is not None and stored.expires_at - stored.created_at == timedelta(hours=2)


def test_two_concurrent_acceptances_of_one_invitation_make_one_membership(
        fresh_database: Database) -> None:
    with fresh_database.transaction() as session:
        member = make_member(session, "acme")
        _, token = create_invitation(
            session, "cli", get_member(session, "cli", "acme"),
            InvitationCreate(email="ada@acme.test", role=Role.viewer), ttl=timedelta(days=1),
            context=RequestContext())
        member_id = member.id
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        barrier.wait(timeout=10)
        try:
            with fresh_database.transaction() as session:
                accept_invitation(session, token, InvitationAccept(
                    name=f"Ada {n}", password=NEW_PASSWORD), context=RequestContext())
            outcomes.append("accepted")
        except Exception as exc:  # noqa: BLE001 - the losers' errors are what we count
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes.count("accepted") == 1, outcomes
    assert set(outcomes) - {"accepted"} <= {InvitationGone.__name__, "Conflict"}, outcomes
    with fresh_database.session() as session:
        assert len(session.scalars(select(Membership).where(
            Membership.member_id == member_id)).all()) == 1
        assert len(session.scalars(select(User).where(
            User.email_normalized == "ada@acme.test")).all()) == 1


# --- mail on a real SMTP server ------------------------------------------------------------


def test_the_invitation_mail_reaches_the_smtp_server_with_the_link(
        settings: Settings, database: Database, cast: Cast, as_,
        smtp_server) -> None:
    inbox, port = smtp_server
    smtp = SmtpSettings(host="127.0.0.1", port=port, starttls=False, sender="hpcgw@consortium.test")
    with TestClient(create_app(settings.model_copy(update={"smtp": smtp}),
                               database=database)) as client:
        invitation = invite(client, as_(cast.manager), email="ada@acme.test")
        assert (invitation["mail"], invitation["link"]) == ("sent", None)
        [(sender, recipients, message)] = inbox.messages
        assert (sender, recipients) == ("hpcgw@consortium.test", ["ada@acme.test"])
        assert "Member acme" in message["Subject"]
        body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
        [link] = [line for line in body.splitlines() if "/ui/invitations/" in line]
        assert link.startswith("http://testserver/ui/invitations/")
        # the mailed link works, once
        token = link.rsplit("/", 1)[1]
        assert accept(client, token, name="Ada", password=NEW_PASSWORD).status_code == 200
        assert accept(client, token, name="Ada", password=NEW_PASSWORD).status_code == 410


def test_a_failed_mail_is_reported_and_the_invitation_stays_valid(
        settings: Settings, database: Database, cast: Cast, as_, unused_port: int) -> None:
    smtp = SmtpSettings(host="127.0.0.1", port=unused_port, starttls=False, timeout=2)
    with TestClient(create_app(settings.model_copy(update={"smtp": smtp}),
                               database=database)) as client:
        invitation = invite(client, as_(cast.manager), email="ada@acme.test")
        assert invitation["mail"] == "failed"
        assert "ConnectionRefusedError" in str(invitation["mail_error"])
        listed = client.get("/api/v1/members/acme/invitations", headers=as_(cast.manager))
        assert listed.json()[0]["status"] == "pending"
        assert accept(client, token_of(invitation), name="Ada",
                      password=NEW_PASSWORD).status_code == 200


def test_the_accept_route_documents_that_signing_in_is_optional(app_client: TestClient) -> None:
    operation = app_client.get("/openapi.json").json()["paths"][
        "/api/v1/invitations/{token}/accept"]["post"]
    assert operation["security"] == [{"login": []}, {"token": []}, {}]
    assert {"401", "403", "410", "422"} <= set(operation["responses"])
