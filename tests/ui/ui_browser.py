"""Helpers of the browser tests: signing in through the page, the axe-core check, screenshots."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"  # Debian's: no browser is downloaded
SCREENSHOTS = Path(os.environ.get("HPCGW_SCREENSHOTS")
                   or Path(tempfile.gettempdir()) / "hpcgw-screenshots")
_axe = Axe()  # axe-core's axe.min.js from the axe-playwright-python package, injected locally


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
