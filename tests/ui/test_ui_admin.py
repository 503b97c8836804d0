"""The admin pages in Chromium on the demo gateway: an admin onboards a member with its cluster
account and invites someone to it through the pages; the books, the audit log and the clusters
show; a researcher gets the 404 page for every admin page and for another member's job; no page
has a serious accessibility violation."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import Page, expect
from ui_browser import assert_accessible, screenshot

if TYPE_CHECKING:
    from ui_browser import DemoGateway

pytestmark = pytest.mark.browser
PageAs = Callable[..., Page]  # tests/ui/conftest.py's page_as
ADMIN_PAGES = ("members", "invitations", "allocations", "ledger", "audit", "clusters")


def api_get(gateway: DemoGateway, path: str) -> object:
    """GET on the API as the demo's admin (a password login, as the CLI does)."""
    email, password = gateway.login("admin")
    token = httpx.post(f"{gateway.url}/api/v1/auth/token",
                       data={"grant_type": "password", "username": email,
                             "password": password}, timeout=30)
    assert token.status_code == 200, token.text
    answer = httpx.get(f"{gateway.url}{path}", timeout=30,
                       headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_admin_onboards_a_member_with_its_cluster_account_and_invites_someone(
        page_as: PageAs, new_page: Callable[..., Page], demo_gateway: DemoGateway) -> None:
    page = page_as("admin")
    slug = f"ui-{secrets.token_hex(3)}"
    page.goto(f"{demo_gateway.url}/ui/admin/members")
    assert_accessible(page)
    page.locator("#m-slug").fill(slug)
    page.locator("#m-name").fill("Atelier Numérique")
    page.locator("#m-kind").select_option("company")
    page.locator("#m-contact-email").fill(f"ops@{slug}.test")
    page.locator("#i-cluster").select_option("local")
    page.locator("#i-user").fill(slug)
    page.locator("#i-account").fill(slug)
    page.locator("#i-key").fill("local")
    page.locator("#member-form button[type=submit]").click()
    row = page.locator(f"#members tr[data-member='{slug}']")
    expect(row).to_contain_text(f"local: {slug} / {slug}")
    expect(page.locator("p.notice")).to_contain_text(slug)
    screenshot(page, "admin-members")

    page.goto(f"{demo_gateway.url}/ui/admin/invitations?member={slug}")
    page.locator("#inv-email").fill(f"boss@{slug}.test")
    page.locator("#inv-role").select_option("manager")
    page.locator("#invitation-form button[type=submit]").click()
    link = page.locator("#invitation-link").input_value()
    assert "/ui/invitations/" in link
    expect(page.locator("#invitations tbody tr").first).to_contain_text(f"boss@{slug}.test")
    assert_accessible(page)
    screenshot(page, "admin-invitations")
    # the link works: the invitee's page names the member
    invitee = new_page()
    invitee.goto(link)
    expect(invitee.locator("main")).to_contain_text("Atelier Numérique")

    page.goto(f"{demo_gateway.url}/ui/admin/audit?action=member.create")
    expect(page.locator("#audit tbody tr[data-action='member.create']").first).to_be_visible()
    assert_accessible(page)
    screenshot(page, "admin-audit")
    for name in ("allocations", "ledger", "clusters"):
        page.goto(f"{demo_gateway.url}/ui/admin/{name}")
        assert_accessible(page)
        screenshot(page, f"admin-{name}")
    page.goto(f"{demo_gateway.url}/ui/admin/ledger")
    expect(page.locator("#ledger-verified")).to_be_visible()


def test_a_researcher_gets_the_404_page_for_admin_pages_and_another_members_job(
        page_as: PageAs, demo_gateway: DemoGateway) -> None:
    members = api_get(demo_gateway, "/api/v1/members")
    assert isinstance(members, list)
    ids = {m["slug"]: m["id"] for m in members}
    jobs = api_get(demo_gateway, "/api/v1/jobs?limit=200")
    assert isinstance(jobs, dict)
    theirs = next(j["id"] for j in jobs["items"] if j["member_id"] == ids["3m"])
    page = page_as("researcher", "lirmm-ai")
    for name in ADMIN_PAGES:
        answer = page.goto(f"{demo_gateway.url}/ui/admin/{name}")
        assert answer is not None and answer.status == 404, name
    answer = page.goto(f"{demo_gateway.url}/ui/jobs/{theirs}")
    assert answer is not None and answer.status == 404
    page.goto(f"{demo_gateway.url}/ui/jobs")
    expect(page.locator(f"#jobs tr[data-job='{theirs}']")).to_have_count(0)
    assert_accessible(page)
