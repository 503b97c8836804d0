"""The invitation page (/ui/invitations/{token}), the link of the invitation mail: through
TestClient, and once in a real headless Chromium against a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import uvicorn
from factories import audit_events, make_member, make_user
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.models import Member, Role, User
from consortium.schemas import InvitationCreate
from consortium.service import Action, create_invitation
from gateway.api.app import create_app
from gateway.auth.principal import principal_for_user
from gateway.db import Database
from gateway.settings import Settings

PASSWORD = "a long enough password"
EMAIL = "newcomer@example.test"
START_TIMEOUT = 10.0


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


def test_an_existing_account_accepts_with_an_empty_form_and_keeps_its_password(
        app_client: TestClient, session: Session) -> None:
    existing = make_user(session, email=EMAIL)
    path = invite(session, make_member(session, "acme"))
    page = app_client.get(path)
    assert page.status_code == 200
    assert "Accept the invitation" in page.text and 'name="password"' not in page.text
    answer = app_client.post(path, data={})
    assert answer.status_code == 200, answer.text
    assert [e.details["new_user"] for e in audit_events(session, Action.invitation_accept)] \
        == [False]
    assert newcomer(session) == existing


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
        assert "set-cookie" not in answer.headers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def live_server(settings: Settings, fresh_database: Database) -> Iterator[str]:
    """The app under a real uvicorn on loopback, on a committed database; yields its base URL."""
    port = _free_port()
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
        live_server: str, fresh_database: Database) -> None:
    from playwright.sync_api import sync_playwright

    with fresh_database.transaction() as session:
        path = invite(session, make_member(session, "acme"))
    hosts: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.on("request", lambda request: hosts.append(urlsplit(request.url).hostname or ""))
            page.goto(live_server + path)
            assert "Member acme" in page.content()
            page.fill("#name", "New Comer")
            page.fill("#password", PASSWORD)
            page.fill("#confirmation", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("text=Your account is ready")
        finally:
            browser.close()
    assert len(hosts) >= 3  # the page, its style sheet, the form's POST (and its answer)
    assert set(hosts) == {"127.0.0.1"}
    with fresh_database.transaction() as session:
        assert newcomer(session) is not None
