"""The base of the web interface in Debian's Chromium against a real `hpcgw demo` server:
sign-in and sign-out, the dashboard's figures equal to the API's, a chart drawn, a CSV, the
French/English switch kept per person, CSRF, rights, accessibility, and no request leaving
127.0.0.1. Screenshots of the main pages go to $HPCGW_SCREENSHOTS."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from playwright.sync_api import Page, expect
from ui_browser import DemoGateway, Hosts, NewPage, assert_accessible, screenshot, sign_in

pytestmark = pytest.mark.browser
PageAs = Callable[..., Page]


def api_get(gateway: DemoGateway, role: str, member: str | None, path: str) -> object:
    """The API's answer to GET `path`, as the demo person of this role (in this member)."""
    email, password = gateway.login(role, member)
    token = httpx.post(f"{gateway.url}/api/v1/auth/token", timeout=10, data={
        "grant_type": "password", "username": email, "password": password}).json()
    answer = httpx.get(f"{gateway.url}/api/v1{path}", timeout=10,
                       headers={"Authorization": f"Bearer {token['access_token']}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def api_usage(gateway: DemoGateway, role: str, member: str) -> dict[str, object]:
    usage = api_get(gateway, role, member, f"/members/{member}/usage")
    assert isinstance(usage, dict)
    return usage


def test_visitor_home_explains_the_gateway_in_french_and_switches_to_english(
        new_page: NewPage, demo_gateway: DemoGateway) -> None:
    page = new_page()
    page.goto(demo_gateway.url + "/")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("link", name="Se connecter").first).to_be_visible()
    assert_accessible(page)
    screenshot(page, "home-visitor-fr")
    page.get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_contain_text("gateway")
    page.reload()  # remembered for the visitor by a cookie
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_manager_dashboard_figures_equal_the_usage_api_and_its_chart_is_drawn(
        page_as: PageAs, demo_gateway: DemoGateway) -> None:
    page = page_as("manager", "3m")
    assert page.url.endswith("/ui/members/3m"), page.url
    usage = api_usage(demo_gateway, "manager", "3m")
    shown = page.evaluate("""() => ({
        figures: Object.fromEntries([...document.querySelectorAll('.figure')].map(
            f => [f.id, f.querySelector('data').dataset.msu])),
        tables: Object.fromEntries([...document.querySelectorAll('table[id]')].map(
            t => [t.id, Object.fromEntries([...t.querySelectorAll('tbody tr[data-key]')].map(
                r => [r.dataset.key, r.querySelector('td').dataset.msu]))]))})""")
    for figure in ("allocated", "used", "held", "available"):
        assert shown["figures"][figure] == str(usage[figure]["msu"]), figure  # type: ignore[index]
    assert int(usage["used"]["msu"]) > 0  # type: ignore[index]  # the demo's past jobs
    for table, key in (("projects", "by_project"), ("users", "by_user"),
                       ("partitions", "by_partition"), ("months", "by_month")):
        assert shown["tables"][f"table-{table}"] == {
            line["key"]: str(line["used"]["msu"])  # type: ignore[index]
            for line in usage[key]}, table  # type: ignore[attr-defined]
    chart = page.locator("#chart-days svg")
    expect(chart).to_be_visible()
    assert chart.locator(".series.color-0 .dot").count() >= 20  # a point a day
    assert chart.locator(".series.dashed path.line").count() == 1  # the straight-line pace
    assert page.locator("#chart-months svg rect.rect").count() >= 1
    assert_accessible(page)
    screenshot(page, "dashboard-manager-fr")


def test_a_table_downloads_as_csv_with_the_figures_of_the_page(page_as: PageAs) -> None:
    page = page_as("manager", "lirmm-ai")
    with page.expect_download() as download:
        page.locator("#table-projects a.csv").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert rows, "an empty CSV"
    cells = page.locator("#table-projects tbody tr[data-key] td:first-of-type")
    assert sorted(int(r["used_msu"]) for r in rows) == sorted(
        int(cells.nth(i).get_attribute("data-msu") or "") for i in range(cells.count()))
    assert sum(Decimal(r["used_su"]) for r in rows) > 0


def test_english_chosen_by_a_person_is_kept_for_their_next_sign_in(
        page_as: PageAs, new_page: NewPage, demo_gateway: DemoGateway) -> None:
    page = page_as("researcher", "occitanie-robotics", width=390)  # a phone's width
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", name="Balance")).to_be_visible()
    screenshot(page, "dashboard-researcher-phone-en")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in").first).to_be_visible()
    other = new_page()  # another browser: no cookie of the first one
    sign_in(other, demo_gateway.url, *demo_gateway.login("researcher", "occitanie-robotics"))
    expect(other.locator("html")).to_have_attribute("lang", "en")


def test_sign_out_revokes_the_session_even_for_a_copied_cookie(
        page_as: PageAs, new_page: NewPage, demo_gateway: DemoGateway) -> None:
    page = page_as("researcher", "3m")
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "hpcgw_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/"
    page.get_by_role("button", name="Se déconnecter").click()
    thief = new_page()
    thief.context.add_cookies([session])
    thief.goto(demo_gateway.url + "/ui/members/3m")
    assert "/ui/sign-in" in thief.url


def test_a_form_posted_without_its_csrf_token_is_refused(page_as: PageAs,
                                                         demo_gateway: DemoGateway) -> None:
    page = page_as("manager", "3m")
    # the session cookie goes along (same site), the form's token does not
    answer = page.request.post(demo_gateway.url + "/ui/sign-out", form={"next": "/"})
    assert answer.status == 403
    assert "CSRF" in answer.text()
    page.reload()
    expect(page.get_by_role("button", name="Se déconnecter")).to_be_visible()  # still signed in


def test_researcher_cannot_reach_an_admin_page_or_another_members_dashboard(
        page_as: PageAs, demo_gateway: DemoGateway) -> None:
    page = page_as("researcher", "3m")
    for path in ("/ui/overview", "/ui/members/lirmm-ai", "/ui/members/lirmm-ai/users.csv"):
        answer = page.goto(demo_gateway.url + path)
        assert answer is not None and answer.status == 404, path
    expect(page.get_by_role("heading", level=1)).to_have_text("Page introuvable")
    assert_accessible(page)


def test_admin_lands_on_the_consortium_overview_and_opens_a_member(
        page_as: PageAs, demo_gateway: DemoGateway) -> None:
    page = page_as("admin")
    assert page.url.endswith("/ui/overview"), page.url
    # the header and a row per member (the admin pages' tests may have added some to the demo)
    members = api_get(demo_gateway, "admin", None, "/members")
    assert isinstance(members, list)
    expect(page.get_by_role("row")).to_have_count(1 + len(members))
    assert_accessible(page)
    screenshot(page, "overview-admin-fr")
    page.get_by_role("link", name="Occitanie Robotics").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Occitanie Robotics")


def test_sign_in_page_and_a_refused_password(new_page: NewPage,
                                             demo_gateway: DemoGateway) -> None:
    page = new_page()
    page.goto(demo_gateway.url + "/ui/members/3m")  # a visitor is sent to sign in, then back
    assert "/ui/sign-in?next=/ui/members/3m" in page.url
    assert_accessible(page)
    screenshot(page, "sign-in-fr")
    email, _ = demo_gateway.login("manager", "3m")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Mot de passe").fill("not the password")
    page.locator("form.stacked button[type=submit]").click()
    expect(page.get_by_role("alert")).to_contain_text("incorrect")
    sign_in(page, demo_gateway.url, *demo_gateway.login("manager", "3m"))


def test_api_docs_load_only_the_gateways_own_files(new_page: NewPage,
                                                   demo_gateway: DemoGateway) -> None:
    page = new_page()
    page.goto(demo_gateway.url + "/docs")
    # the OpenAPI document is large: its first build takes a while on a busy machine
    expect(page.locator(".swagger-ui .title").first).to_contain_text("hpcgw", timeout=60_000)
    page.goto(demo_gateway.url + "/redoc")
    expect(page.locator("h1").first).to_contain_text("hpcgw", timeout=60_000)


def test_no_request_left_127_0_0_1(requested_hosts: Hosts) -> None:
    """Last of the module: every request of every page above went to the gateway."""
    assert requested_hosts.seen, "no request recorded"
    assert requested_hosts.seen == {"127.0.0.1"}, requested_hosts.seen
