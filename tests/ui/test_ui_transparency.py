"""The transparency report's page and the dashboard's energy chart in Debian's Chromium against
a real `hpcgw demo` server (its past jobs carry estimated footprints): the page's figures equal
the API's, charts are drawn, labels are shown, French and English, CSV and JSON downloads,
accessible; a visitor is sent to sign in (the demo does not publish the report)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from ui_browser import DemoGateway, NewPage, assert_accessible, screenshot

pytestmark = pytest.mark.browser
PageAs = Callable[..., Page]


def api(gateway: DemoGateway, role: str, path: str, member: str | None = None,
        **params: str) -> Any:
    email, password = gateway.login(role, member)
    token = httpx.post(f"{gateway.url}/api/v1/auth/token", timeout=10, data={
        "grant_type": "password", "username": email, "password": password}).json()
    answer = httpx.get(f"{gateway.url}/api/v1{path}", params=params, timeout=10,
                       headers={"Authorization": f"Bearer {token['access_token']}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_visitor_is_sent_to_sign_in_when_the_report_is_not_public(
        new_page: NewPage, demo_gateway: DemoGateway) -> None:
    page = new_page()
    page.goto(demo_gateway.url + "/ui/transparency")
    assert "/ui/sign-in?next=" in page.url


def test_the_report_page_shows_the_apis_figures_with_labels_in_both_languages(
        page_as: PageAs, demo_gateway: DemoGateway) -> None:
    report = api(demo_gateway, "admin", "/reports/transparency")
    total = report["total"]["footprint"]
    assert total["jobs"] > 0 and total["label"] == "estimated"  # the demo measures nothing
    page = page_as("admin")
    page.goto(demo_gateway.url + "/ui/transparency")

    expect(page.get_by_role("heading", level=1)).to_have_text("Rapport de transparence")
    shown = page.locator("#total dd data").first.get_attribute("value")
    assert float(shown or "nan") == total["energy_kwh"]["total"]
    expect(page.locator("#total")).to_have_attribute("data-label", "estimated")
    expect(page.locator("p.label").first).to_contain_text("estimés (modèle Green Algorithms)")
    expect(page.locator("#count-jobs")).to_contain_text(str(total["jobs"]))
    for name in ("domain", "kind"):
        keys = page.locator(f"#table-{name} tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.key)")
        assert keys == [g["key"] for g in report[f"by_{name}"]]
        assert page.locator(f"#chart-{name} svg rect.rect").count() >= 1  # bars drawn
    assert_accessible(page)
    screenshot(page, "transparency-fr")

    with page.expect_download() as got:
        page.get_by_role("link", name="CSV", exact=True).first.click()
    rows = list(csv.DictReader(io.StringIO(got.value.path().read_text())))
    [line] = [r for r in rows if r["section"] == "total"]
    assert (int(line["jobs"]), line["figures"]) == (total["jobs"], "estimated")
    with page.expect_download() as got:
        page.get_by_role("link", name="JSON", exact=True).click()
    assert json.loads(got.value.path().read_text())["total"] == report["total"]

    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Transparency report")
    expect(page.locator("p.label").first).to_contain_text("estimated (Green Algorithms model)")
    screenshot(page, "transparency-en")


def test_the_dashboard_draws_energy_by_month_beside_the_hours(
        page_as: PageAs, demo_gateway: DemoGateway) -> None:
    usage = api(demo_gateway, "manager", "/members/3m/usage", "3m")
    since = min(a["starts_at"] for a in usage["allocations"])
    footprint = api(demo_gateway, "manager", "/members/3m/footprint", "3m", since=since)
    page = page_as("manager", "3m")

    section = page.locator("section[aria-labelledby=energy-title]")
    expect(section.get_by_role("heading", level=2)).to_have_text("Énergie et carbone")
    shown = page.locator("#footprint dd data").first.get_attribute("value")
    assert float(shown or "nan") == footprint["total"]["energy_kwh"]["total"] > 0
    expect(page.locator("#footprint")).to_have_attribute("data-label", "estimated")
    assert page.locator("#chart-energy svg rect.rect").count() >= len(
        footprint["breakdowns"]["month"])
    assert_accessible(page)
