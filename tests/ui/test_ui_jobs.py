"""The job pages in Chromium against the real test cluster: a researcher submits a job from an
admin's template form (quoted first), follows its log live as Slurm runs it, and cancels it;
another member's researcher gets the 404 page for it. The gateway is a uvicorn process with the
slurm_ssh backend and its trackers (tests/e2e/gateway_process.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from e2e.e2e_helpers import World, make_world, slurm_accounting, wait_for
from factories import PASSWORD, auth_headers, make_user
from playwright.sync_api import Page, expect
from server_process import free_port
from ui_browser import assert_accessible, screenshot, sign_in

from gateway.db import Database
from gateway.jobs.config import JobsSettings
from gateway.jobs.models import Job
from gateway.settings import Settings
from schedulers.config import PartitionConfig

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = [pytest.mark.browser, pytest.mark.slurm]
NewPage = Callable[..., Page]  # tests/ui/conftest.py's new_page

TESTS = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = TESTS.parent / "docs/examples/testcluster.toml"
# an admin's template: a job that writes a numbered line every half second
TICKER = {
    "slug": "ticker", "title": "Ticker (writes a line every interval)",
    "description": "Prints `tick N` lines, N from 1 to `count`.",
    "body": "#!/bin/sh\ni=1\nwhile [ \"$i\" -le {{ count }} ]; do\n  echo \"tick $i\"\n"
            "  i=$((i + 1))\n  sleep {{ interval }}\ndone\n",
    "parameters": [
        {"name": "count", "type": "int", "default": 10, "minimum": 1, "maximum": 1000},
        {"name": "interval", "type": "float", "default": 1.0, "minimum": 0.1, "maximum": 60},
    ],
}


@dataclass
class ClusterGateway:
    url: str
    world: World
    database: Database


@pytest.fixture
def cluster_gateway(settings: Settings, fresh_database: Database, testcluster: Cluster,
                    tmp_path: Path) -> Iterator[ClusterGateway]:
    """The gateway on the test cluster, on a database of its own (two members, a researcher
    each), an admin's ticker template created through the API."""
    example = tomllib.loads(EXAMPLE_CONFIG.read_text())["clusters"][0]
    cluster = testcluster.config(
        partitions=[PartitionConfig(**p) for p in example["partitions"]],
        slurm_billing_scale=example["slurm_billing_scale"])
    settings = settings.model_copy(update={
        "clusters": [cluster], "database_url": fresh_database.url,
        "jobs": JobsSettings(tracker_interval_seconds=0.5, tracker_max_backoff_seconds=2.0,
                             stream_poll_seconds=0.2, stream_max_seconds=120.0)})
    world = make_world(fresh_database, testcluster)
    with fresh_database.transaction() as session:
        admin = make_user(session, admin=True)
        headers = auth_headers(settings, admin)
    data = settings.model_dump(mode="json")
    data["secret_key"] = settings.secret_key.get_secret_value()
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(TESTS / "e2e" / "gateway_process.py"), url.rsplit(":", 1)[1]],
            env={**os.environ, "HPCGW_E2E_SETTINGS": json.dumps(data)}, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        wait_for("the gateway answers /healthz", ready, within=60)
        created = httpx.post(f"{url}/api/v1/templates", json=TICKER, headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        yield ClusterGateway(url, world, fresh_database)
    finally:
        process.terminate()
        process.wait(timeout=30)


def signed_in(new_page: NewPage, gateway: ClusterGateway, email: str) -> Page:
    page = new_page()
    sign_in(page, gateway.url, email, PASSWORD)
    return page


def test_a_template_job_is_quoted_submitted_followed_live_and_cancelled_on_the_cluster(
        new_page: NewPage, cluster_gateway: ClusterGateway, testcluster: Cluster) -> None:
    gateway, started = cluster_gateway, time.monotonic()
    page = signed_in(new_page, gateway, gateway.world.alice.email)
    page.goto(f"{gateway.url}/ui/submit")
    page.locator("#templates a[href='/ui/submit/templates/ticker']").click()
    count = page.locator("#f-parameters-count")
    expect(count).to_have_attribute("min", "1")
    expect(count).to_have_attribute("max", "1000")
    count.fill("600")
    page.locator("#f-parameters-interval").fill("0.5")
    page.locator("#f-resources-partition").select_option(testcluster.partition)
    page.locator("#f-resources-mem_mb").fill("100")
    page.locator("#f-resources-time_limit_minutes").fill("10")
    page.locator("#quote-button").click()
    quote = page.locator("#quote-amount")
    expect(quote).to_be_visible()
    quoted = int(quote.get_attribute("value") or "0")
    assert quoted > 0
    assert_accessible(page)
    screenshot(page, "submit-template-quoted")

    page.locator("#submit-button").click()
    page.wait_for_url(f"{gateway.url}/ui/jobs/*")
    public_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#quote data")).to_have_attribute("value", str(quoted))
    # the log grows as Slurm runs the job: lines arrive over server-sent events
    expect(page.locator("#log")).to_contain_text("tick 3", timeout=60_000)
    expect(page.locator("#job-state [data-state=running]")).to_be_visible()
    assert page.locator("#timeline li").count() >= 2  # accepted ... running
    assert_accessible(page)
    screenshot(page, "job-running-live-log")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#cancel button").click()
    expect(page.locator("#job-state [data-state=cancelled]")).to_be_visible(timeout=60_000)
    expect(page.locator("#cancel")).to_have_count(0)
    with gateway.database.session() as session:
        job = session.query(Job).filter_by(public_id=public_id).one()
        scheduler_id = job.scheduler_id
    assert scheduler_id
    assert slurm_accounting(testcluster, scheduler_id).state.startswith("CANCELLED")
    screenshot(page, "job-cancelled")
    print(f"\nsubmit -> running log -> cancelled: {time.monotonic() - started:.1f} s")

    # the list shows it; another member's researcher only gets the 404 page
    page.goto(f"{gateway.url}/ui/jobs")
    expect(page.locator(f"#jobs tr[data-job='{public_id}']")).to_be_visible()
    assert_accessible(page)
    screenshot(page, "jobs-list")
    stranger = signed_in(new_page, gateway, gateway.world.bob.email)
    for path in (f"/ui/jobs/{public_id}", f"/ui/jobs/{public_id}/files"):
        answer = stranger.goto(f"{gateway.url}{path}")
        assert answer is not None and answer.status == 404, path
