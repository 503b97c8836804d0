"""The invitation page (/ui/invitations/{token}), the link of the invitation mail: through
TestClient, and once in a real headless Chromium against a real uvicorn server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import uvicorn
from factories import PASSWORD as USER_PASSWORD
from factories import audit_events, make_member, make_user
from fastapi.testclient import TestClient
from server_process import free_port
from sqlalchemy import select
from sqlalchemy.orm import Session
from ui_browser import Hosts, NewPage

from consortium.audit import RequestContext
from consortium.models import Member, Membership, Role, User
from consortium.passwords import verify_password
from consortium.schemas import InvitationCreate
from consortium.service import Action, create_invitation
from gateway.api.app import create_app
from gateway.auth.principal import principal_for_user
from gateway.db import Database
from gateway.settings import Settings

PASSWORD = "a long enough password"
EMAIL = "newcomer@example.test"
START_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def csrf_header(app_client: TestClient) -> None:
    """The forms' CSRF token sent along as a page's form sends it (the cookie's signed value),
    in asgi-csrf's header: these tests post the forms' fields directly. In English."""
    def add(request: httpx.Request) -> None:
        token = app_client.cookies.get("csrftoken")
        if token:
            request.headers["x-csrftoken"] = token
    app_client.event_hooks["request"].append(add)
    app_client.get("/ui/sign-in")  # a page gives the browser its token cookie
    app_client.cookies.set("hpcgw_lang", "en")  # the pages' words below are the English ones


def invite(session: Session, member: Member, ttl: timedelta = timedelta(days=1)) -> str:
    """An invitation by the member's manager, made by the service; returns the page's path."""
    manager = make_user(session, roles={member: Role.manager})
    _, token = create_invitation(
        session, principal_for_user(session, manager), member,
        InvitationCreate(email=EMAIL, role=Role.researcher), ttl=ttl,
        context=RequestContext())
    session.flush()
    return f"/ui/invitations/{token}"


def submit(client: TestClient, path: str, confirmation: str = PASSWORD) -> str:
    answer = client.post(path, data={"name": "New Comer", "password": PASSWORD,
                                     "confirmation": confirmation})
    return f"{answer.status_code} {answer.text}"


def newcomer(session: Session) -> User | None:
    session.expire_all()
    return session.scalar(select(User).where(User.email == EMAIL))


def test_valid_invitation_page_shows_member_role_and_email_and_the_form(
        app_client: TestClient, session: Session) -> None:
    path = invite(session, make_member(session, "acme"))
    answer = app_client.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    for shown in ("Member acme", "researcher", EMAIL, 'name="password"',
                  'name="confirmation"', 'method="post"'):
        assert shown in answer.text
    assert 'href="/ui/static/style.css"' in answer.text
    assert app_client.get("/ui/static/style.css").status_code == 200


def test_accepting_creates_a_user_who_logs_in_and_a_second_post_is_gone(
        app_client: TestClient, session: Session) -> None:
    path = invite(session, make_member(session, "acme"))
    answer = app_client.post(path, data={"name": "New Comer", "password": PASSWORD,
                                         "confirmation": PASSWORD})
    assert answer.status_code == 200, answer.text
    assert "Your account is ready" in answer.text and "/docs" in answer.text
    assert PASSWORD not in answer.text
    user = newcomer(session)
    assert user is not None and user.name == "New Comer"
    [event] = audit_events(session, Action.invitation_accept)
    assert event.actor == EMAIL
    login = app_client.post("/api/v1/auth/token", data={
        "grant_type": "password", "username": EMAIL, "password": PASSWORD})
    assert login.status_code == 200, login.text
    assert submit(app_client, path).startswith("410 ")
    again = app_client.get(path)
    assert again.status_code == 410
    assert "already used" in again.text


def test_expired_invitation_answers_410_with_a_clear_sentence(
        app_client: TestClient, session: Session) -> None:
    path = invite(session, make_member(session, "acme"), ttl=timedelta(seconds=-1))
    answer = app_client.get(path)
    assert answer.status_code == 410
    assert "This invitation has expired" in answer.text
    app_client.cookies.set("hpcgw_lang", "fr")
    assert "Cette invitation a expiré : demandez-en une nouvelle." in app_client.get(path).text
    assert submit(app_client, path).startswith("410 ")
    assert newcomer(session) is None


def test_unknown_token_answers_a_404_page(app_client: TestClient) -> None:
    answer = app_client.get("/ui/invitations/not-a-token")
    assert answer.status_code == 404
    assert "Unknown invitation" in answer.text
    assert answer.headers["content-type"].startswith("text/html")


def test_mismatched_confirmation_rerenders_the_form_with_422_and_creates_no_user(
        app_client: TestClient, session: Session) -> None:
    path = invite(session, make_member(session, "acme"))
    answer = app_client.post(path, data={"name": "New <b>Comer</b>", "password": PASSWORD,
                                         "confirmation": PASSWORD + "!"})
    assert answer.status_code == 422
    assert "differ" in answer.text
    assert PASSWORD not in answer.text  # never echoed, not even in the fields
    assert "New &lt;b&gt;Comer&lt;/b&gt;" in answer.text  # kept, and escaped
    assert newcomer(session) is None
    short = app_client.post(path, data={"name": "N", "password": "short",
                                        "confirmation": "short"})
    assert short.status_code == 422 and "at least 12 characters" in short.text
    assert newcomer(session) is None


def test_a_weak_password_is_refused_with_the_estimators_advice(
        app_client: TestClient, session: Session) -> None:
    path = invite(session, make_member(session, "acme"))
    for weak in (" " * 12, "password1234"):
        answer = app_client.post(path, data={"name": "New Comer", "password": weak,
                                             "confirmation": weak})
        assert answer.status_code == 422
        assert "This password is too easy to guess" in answer.text
    app_client.cookies.set("hpcgw_lang", "fr")
    answer = app_client.post(path, data={"name": "New Comer", "password": "password1234",
                                         "confirmation": "password1234"})
    assert answer.status_code == 422
    assert ("Ce mot de passe est trop facile à deviner : C&#39;est un mot de passe très "
            "courant.") in answer.text, answer.text
    assert newcomer(session) is None


# --- an email that already has an account --------------------------------------------------


def test_the_page_is_the_same_whether_the_email_has_an_account_or_not(
        app_client: TestClient, session: Session) -> None:
    path = invite(session, make_member(session, "acme"))
    before = app_client.get(path)
    make_user(session, email=EMAIL, roles={make_member(session, "globex"): Role.manager})
    after = app_client.get(path)
    assert (after.status_code, after.text) == (before.status_code, before.text)
    for offered in ('value="create"', 'value="sign_in"', "Sign in and accept",
                    "Create my account"):
        assert offered in after.text
    assert "globex" not in after.text


def _memberships(session: Session, user: User) -> set[int]:
    session.expire_all()
    return set(session.scalars(select(Membership.member_id).where(Membership.user_id == user.id)))


def test_an_existing_account_is_not_joined_by_an_empty_or_a_create_form(
        app_client: TestClient, session: Session) -> None:
    existing = make_user(session, email=EMAIL)
    path = invite(session, make_member(session, "acme"))
    empty = app_client.post(path, data={})
    assert empty.status_code == 422
    created = app_client.post(path, data={"name": "Mallory", "password": PASSWORD,
                                          "confirmation": PASSWORD})
    assert created.status_code == 401
    assert "No new account can be made for this email here" in created.text
    assert PASSWORD not in created.text
    assert _memberships(session, existing) == set()
    assert verify_password(session.get_one(User, existing.id).password_hash, USER_PASSWORD)
    assert audit_events(session, Action.invitation_accept) == []


def test_signing_in_on_the_page_accepts_with_the_existing_account(
        app_client: TestClient, session: Session) -> None:
    existing = make_user(session, email=EMAIL)
    acme = make_member(session, "acme")
    path = invite(session, acme)
    answer = app_client.post(path, data={"intent": "sign_in", "email": EMAIL.upper(),
                                         "password": USER_PASSWORD})
    assert answer.status_code == 200, answer.text
    assert "Your account is ready" in answer.text and USER_PASSWORD not in answer.text
    assert _memberships(session, existing) == {acme.id}
    [event] = audit_events(session, Action.invitation_accept)
    assert (event.actor, event.details["new_user"]) == (EMAIL, False)
    assert verify_password(session.get_one(User, existing.id).password_hash, USER_PASSWORD)


def test_a_failed_sign_in_reads_the_same_whether_the_email_has_an_account_or_not(
        app_client: TestClient, session: Session) -> None:
    path = invite(session, make_member(session, "acme"))
    wrong = {"intent": "sign_in", "email": EMAIL, "password": "not the password at all"}
    without_account = app_client.post(path, data=wrong)
    existing = make_user(session, email=EMAIL)
    with_account = app_client.post(path, data=wrong)
    assert without_account.status_code == with_account.status_code == 401
    assert without_account.text == with_account.text
    assert "Incorrect email or password." in with_account.text
    assert _memberships(session, existing) == set()


def test_the_pages_sign_in_is_throttled_with_the_apis_login(
        app_client: TestClient, session: Session, settings: Settings) -> None:
    existing = make_user(session, email=EMAIL)
    path = invite(session, make_member(session, "acme"))
    wrong = {"intent": "sign_in", "email": EMAIL, "password": "not the password at all"}
    failures = settings.login_throttle.max_failures_per_account
    assert [app_client.post(path, data=wrong).status_code for _ in range(failures)] == \
        [401] * failures
    # blocked now, even with the right password, here and at POST /auth/token
    right = {**wrong, "password": USER_PASSWORD}
    assert app_client.post(path, data=right).status_code == 429
    assert app_client.post("/api/v1/auth/token", data={
        "grant_type": "password", "username": EMAIL, "password": USER_PASSWORD}).status_code \
        == 429
    assert _memberships(session, existing) == set()


def test_signing_in_as_another_account_is_refused(
        app_client: TestClient, session: Session) -> None:
    other = make_user(session, email="someone.else@example.test")
    path = invite(session, make_member(session, "acme"))
    answer = app_client.post(path, data={"intent": "sign_in", "email": other.email,
                                         "password": USER_PASSWORD})
    assert answer.status_code == 403
    assert "another email" in answer.text
    assert _memberships(session, other) == set()
    assert newcomer(session) is None


def test_signing_in_on_the_page_works_on_a_committed_database(
        settings: Settings, fresh_database: Database) -> None:
    """The sign-in commits transactions of its own before the page's: none waits on another."""
    with fresh_database.transaction() as session:
        make_user(session, email=EMAIL)
        path = invite(session, make_member(session, "acme"))
    with TestClient(create_app(settings, database=fresh_database)) as client:
        answer = client.post(path, data={"intent": "sign_in", "email": EMAIL,
                                         "password": USER_PASSWORD})
    assert answer.status_code == 200, answer.text
    with fresh_database.transaction() as session:
        user = newcomer(session)
        assert user is not None and _memberships(session, user) != set()


def test_pages_forbid_referrer_caching_and_foreign_content(
        app_client: TestClient, session: Session) -> None:
    path = invite(session, make_member(session, "acme"))
    for answer in (app_client.get(path), app_client.get("/ui/invitations/unknown"),
                   app_client.post(path, data={"name": "x", "password": "y",
                                               "confirmation": "z"})):
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "form-action 'self'" in csp
        # no cookie but the forms' CSRF token, which is no credential
        assert all(c.startswith("csrftoken=") for c in answer.headers.get_list("set-cookie"))


@pytest.fixture
def live_server(settings: Settings, fresh_database: Database) -> Iterator[str]:
    """The app under a real uvicorn on loopback, on a committed database; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, database=fresh_database),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=START_TIMEOUT)
    assert not thread.is_alive()


@pytest.mark.browser
def test_chromium_accepts_an_invitation_without_any_foreign_request(
        live_server: str, fresh_database: Database, new_page: NewPage,
        requested_hosts: Hosts) -> None:
    """In French, the default; every request's host recorded (tests/ui/conftest.py)."""
    with fresh_database.transaction() as session:
        path = invite(session, make_member(session, "acme"))
    page = new_page()
    page.set_default_timeout(10_000)
    page.goto(live_server + path)
    assert "Vous êtes invité(e) à rejoindre" in page.locator("h1").inner_text()
    page.fill("#name", "New Comer")
    page.fill("#password", PASSWORD)
    page.fill("#confirmation", PASSWORD)
    page.click("form:has(#name) button[type=submit]")
    page.wait_for_selector("text=Votre compte est prêt")
    assert requested_hosts.seen == {"127.0.0.1"}
    with fresh_database.transaction() as session:
        assert newcomer(session) is not None
