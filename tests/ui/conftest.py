"""Fixtures of the browser tests: one Chromium for the session, one `hpcgw demo` server (its
seeded consortium and printed logins), pages signed in as each kind of person, and every
request a page makes recorded by host."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import server_process
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    sync_playwright,
)
from server_process import ServerProcess
from ui_browser import CHROMIUM, DemoGateway, Hosts, NewPage, sign_in

from gateway.demo import CREDENTIALS_FILE

DEMO_START_TIMEOUT = 180.0


@pytest.fixture(scope="session")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoGateway]:
    """`hpcgw demo` as a real uvicorn process on a free port, its own data directory."""
    hpcgw = shutil.which("hpcgw", path=str(Path(sys.executable).parent))
    assert hpcgw, "hpcgw is not installed in this environment: pip install -e ."
    data = tmp_path_factory.mktemp("ui-demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")}
    server = ServerProcess(hpcgw, ["demo", "--data-dir", str(data / "data")], env,
                           data / "server.log")
    try:
        # the demo hashes seven passwords and writes its weeks of past jobs before it serves
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(server_process, "START_TIMEOUT", DEMO_START_TIMEOUT)
            server.wait_healthy()
        passwords = json.loads((data / "data" / CREDENTIALS_FILE).read_text())
        yield DemoGateway(server.url, passwords, data / "data")
    finally:
        server.stop()


# Module-scoped: while Playwright's sync API runs, its asyncio loop is the running loop of this
# thread, and a later test of the same process that runs its own loop (anyio.run) would fail
# with "Already running asyncio in this thread". Stopped after each module, it leaves none.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def requested_hosts() -> Hosts:
    return Hosts()




@pytest.fixture
def new_page(browser: Browser, requested_hosts: Hosts) -> Iterator[NewPage]:
    """new_page(width=1280): a page in a fresh context (its own cookies) whose every request's
    host is recorded in `requested_hosts` (route interception); closed after the test."""
    contexts: list[BrowserContext] = []

    def make(width: int = 1280, height: int = 900) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height},
                                      accept_downloads=True)
        context.route("**/*", requested_hosts.record)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
    # every test's own pages too, not only the module's last check
    assert requested_hosts.seen <= {"127.0.0.1"}, requested_hosts.seen


@pytest.fixture
def page_as(new_page: NewPage, demo_gateway: DemoGateway) -> Callable[..., Page]:
    """page_as("admin" | "manager" | "researcher", member=None): a page signed in through the
    sign-in form as that demo person."""
    def make(role: str, member: str | None = None, width: int = 1280) -> Page:
        page = new_page(width=width)
        sign_in(page, demo_gateway.url, *demo_gateway.login(role, member))
        return page
    return make
