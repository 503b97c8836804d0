"""Helpers of the browser tests: the demo server's handle, the hosts the pages asked for,
signing in through the page, the axe-core check, screenshots."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, Route

from gateway.demo import ADMIN_EMAIL, MEMBERS

CHROMIUM = "/usr/bin/chromium"  # Debian's: no browser is downloaded
SCREENSHOTS = Path(os.environ.get("HPCGW_SCREENSHOTS")
                   or Path(tempfile.gettempdir()) / "hpcgw-screenshots")
_axe = Axe()  # axe-core's axe.min.js from the axe-playwright-python package, injected locally

NewPage = Callable[..., Page]


@dataclass
class DemoGateway:
    url: str
    passwords: dict[str, str]  # email -> password, as the demo keeps them
    data_dir: Path

    def login(self, role: str, member: str | None = None) -> tuple[str, str]:
        """(email, password) of the first demo person with this role ("admin", "manager",
        "researcher"), in the member of this slug if one is given."""
        if role == "admin":
            return ADMIN_EMAIL, self.passwords[ADMIN_EMAIL]
        email = next(p.email for m in MEMBERS for p in m.people
                     if p.role.value == role and member in (None, m.slug))
        return email, self.passwords[email]


@dataclass
class Hosts:
    """Every host the browser contexts asked for."""

    seen: set[str] = field(default_factory=set)

    def record(self, route: Route) -> None:
        """Route interception sees each request the browser sends (not one its CSP blocked);
        the request then goes on."""
        parts = urlsplit(route.request.url)
        self.seen.add(parts.hostname or route.request.url)
        route.continue_()


def sign_in(page: Page, base_url: str, email: str, password: str) -> None:
    """Through the sign-in form, as a person would; lands wherever `/` sends them."""
    page.goto(f"{base_url}/ui/sign-in")
    page.get_by_label("E-mail").or_(page.get_by_label("Email")).fill(email)
    page.get_by_label("Mot de passe").or_(page.get_by_label("Password")).fill(password)
    page.locator("form.stacked button[type=submit]").click()
    page.wait_for_load_state()
    assert "/ui/sign-in" not in page.url, page.content()


def assert_accessible(page: Page) -> None:
    """axe-core on the page as it is: no serious or critical violation."""
    results = _axe.run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, "\n".join(f"{v['id']} ({v['impact']}): {v['help']}: "
                              f"{[n['target'] for n in v['nodes']][:5]}" for v in bad)


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG into $HPCGW_SCREENSHOTS (a temporary directory by default)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
