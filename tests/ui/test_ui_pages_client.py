"""The pages through TestClient: home, sign-in and sign-out with the session cookie, CSRF on
every form, rights as the API's, the offline API docs, the CSP."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

from factories import PASSWORD, make_member, make_user
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from ui_client import csrf_token, sign_in

import quotas.service as quotas
from consortium.base import utcnow
from consortium.models import Role
from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings
from gateway.ui.auth import SESSION_COOKIE
from quotas.models import AllocationKind
from quotas.rates import Amounts
from schedulers.config import BillingWeights

WEIGHTS = BillingWeights(gpu=1.0)
ONE_GPU = Amounts(gpus=1, cpus=1, mem_mb=1024)  # 1 SU an hour


def test_visitor_home_is_french_with_a_sign_in_link_and_a_strict_csp(
        app_client: TestClient) -> None:
    answer = app_client.get("/")
    assert answer.status_code == 200
    assert '<html lang="fr">' in answer.text
    assert 'href="/ui/sign-in"' in answer.text
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert "unsafe-inline" not in answer.headers["content-security-policy"]


def test_researcher_signs_in_lands_on_member_dashboard_and_signs_out(
        app_client: TestClient, session: Session) -> None:
    member = make_member(session)
    user = make_user(session, roles={member: Role.researcher})
    session.commit()
    sign_in(app_client, user.email)
    cookie = app_client.cookies.get(SESSION_COOKIE)
    assert cookie
    home = app_client.get("/", follow_redirects=False)
    assert home.headers["location"] == f"/ui/members/{member.slug}"
    board = app_client.get(home.headers["location"])
    assert board.status_code == 200, board.text
    assert "<svg" in board.text
    out = app_client.post("/ui/sign-out", data={"csrftoken": csrf_token(board.text)},
                          follow_redirects=False)
    assert out.status_code == 303
    app_client.cookies.set(SESSION_COOKIE, cookie)  # a copied cookie is worthless now
    assert app_client.get(f"/ui/members/{member.slug}",
                          follow_redirects=False).status_code == 303


def test_api_docs_pages_reference_only_the_gateways_own_files(app_client: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        answer = app_client.get(path)
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        html = answer.text
        urls = re.findall(r'(?:src|href)="([^"]+)"|url: *[\'"]([^\'"]+)', html)
        assets = [u for pair in urls for u in pair if u]
        assert assets, html
        assert all(u.startswith("/") and not u.startswith("//") for u in assets), assets
        assert "googleapis" not in html and "cdn" not in html.lower()
        for asset in assets:
            assert app_client.get(asset).status_code == 200, asset


def test_a_post_without_the_forms_csrf_token_is_refused(app_client: TestClient,
                                                        session: Session) -> None:
    user = make_user(session)
    session.commit()
    token = csrf_token(app_client.get("/ui/sign-in").text)
    refused = app_client.post("/ui/sign-in", data={"email": user.email, "password": PASSWORD},
                              follow_redirects=False)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert not app_client.cookies.get(SESSION_COOKIE)
    accepted = app_client.post("/ui/sign-in", data={"email": user.email, "password": PASSWORD,
                                                    "csrftoken": token}, follow_redirects=False)
    assert accepted.status_code == 303


def test_the_session_cookie_is_httponly_lax_and_secure_behind_a_tls_proxy(
        settings: Settings, database: Database, session: Session) -> None:
    user = make_user(session)
    session.commit()
    behind = settings.model_copy(update={"trusted_proxies": ["127.0.0.0/8"]})
    with TestClient(create_app(behind, database=database), client=("127.0.0.1", 5000),
                    headers={"X-Forwarded-Proto": "https"}) as client:
        token = csrf_token(client.get("/ui/sign-in").text)
        answer = client.post("/ui/sign-in", data={"email": user.email, "password": PASSWORD,
                                                  "csrftoken": token}, follow_redirects=False)
    cookie = next(v for k, v in answer.headers.multi_items()
                  if k == "set-cookie" and v.startswith(SESSION_COOKIE))
    assert all(attr in cookie for attr in ("HttpOnly", "SameSite=lax", "Secure", "Path=/"))


def test_a_next_target_on_another_host_is_not_followed(app_client: TestClient,
                                                       session: Session) -> None:
    user = make_user(session)
    session.commit()
    token = csrf_token(app_client.get("/ui/sign-in").text)
    answer = app_client.post("/ui/sign-in", data={
        "email": user.email, "password": PASSWORD, "csrftoken": token,
        "next": "//evil.example/"}, follow_redirects=False)
    assert answer.headers["location"] == "/"


def test_ui_and_dashboard_redirect_home(app_client: TestClient) -> None:
    for path in ("/ui", "/dashboard"):
        answer = app_client.get(path, follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (308, "/")


def test_dashboard_days_and_csv_add_up_to_the_usage_apis_used(app_client: TestClient,
                                                              session: Session) -> None:
    """Two jobs settled on two days: the daily table (by the database's own day function, on
    SQLite and PostgreSQL) adds up to the API's `used`, and its CSV says the same."""
    member = make_member(session)
    user = make_user(session, roles={member: Role.manager})
    now = utcnow()
    quotas.grant(session, member_id=member.id, amount_msu=100_000, kind=AllocationKind.grant,
                 starts_at=now - timedelta(days=5), ends_at=now + timedelta(days=25),
                 actor="admin")
    for n, (days_ago, hours) in enumerate(((3, 2), (1, 5))):
        at = now - timedelta(days=days_ago)
        ref = quotas.JobRef(job_id=f"j{n}", member_id=member.id, project_id=None,
                            user_id=user.id, cluster="local", partition="gpu")
        quotas.hold(session, ref, WEIGHTS, ONE_GPU, 6 * 3600, now=at)
        quotas.settle(session, f"j{n}", WEIGHTS, ONE_GPU, hours * 3600, state="completed",
                      now=at + timedelta(hours=hours))
    session.commit()
    sign_in(app_client, user.email)
    page = app_client.get(f"/ui/members/{member.slug}")
    assert page.status_code == 200, page.text
    assert 'data-msu="7000"' in page.text  # used: 7 SU
    rows = list(csv.DictReader(io.StringIO(
        app_client.get(f"/ui/members/{member.slug}/days.csv").text)))
    assert sum(Decimal(r["used_su"]) for r in rows) == Decimal(7)
    assert Decimal(rows[-1]["cumulative_su"]) == Decimal(7)
    assert [Decimal(r["used_su"]) for r in rows if Decimal(r["used_su"])] == [2, 5]
    assert 0 < Decimal(rows[-1]["pace_su"]) < 100  # the straight line, part way to 100 SU


def test_a_period_filter_of_centuries_is_cut_to_two_years(app_client: TestClient,
                                                          session: Session) -> None:
    member = make_member(session)
    user = make_user(session, roles={member: Role.viewer})
    session.commit()
    sign_in(app_client, user.email)
    answer = app_client.get(f"/ui/members/{member.slug}/days.csv?from=1900-01-01&to=2100-01-01")
    assert answer.status_code == 200, answer.text
    assert len(answer.text.splitlines()) == 1 + 732  # the header, then two years of days
    assert app_client.get(f"/ui/members/{member.slug}?from=nonsense").status_code == 422
