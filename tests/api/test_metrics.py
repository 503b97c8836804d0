"""/metrics: every family appears with its labels after the action it counts, and label values
stay bounded (route templates, configured clusters, states, class names; never an id)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from api_world import CLUSTER, FakeScheduler, Seeded, cluster_config, seed, seeded_settings
from fastapi.testclient import TestClient
from jobs_helpers import job_body, make_world
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from gateway.api.app import create_app
from gateway.db import Database
from gateway.jobs.clusters import Cluster
from gateway.jobs.models import Job, JobState
from gateway.jobs.tracker import ClusterTracker
from gateway.metrics import TRACKER_CYCLE, UNMATCHED
from gateway.settings import Settings
from gateway.webhooks.delivery import DeliveryWorker
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhooks"))
from webhook_helpers import receiver

Figures = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Figures:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((name, frozenset(labels.items())), 0.0)


def labels_of(figures: Figures, name: str, label: str) -> set[str]:
    return {dict(key)[label] for n, key in figures if n == name}


def test_requests_are_labelled_by_route_template(seeded: tuple[TestClient, Seeded]) -> None:
    client, world = seeded
    random_id = secrets.token_hex(6)  # a well-formed job id nobody has
    stray = secrets.token_hex(8)
    assert client.get(f"/api/v1/jobs/{random_id}", headers=world.researcher).status_code == 404
    assert client.get(f"/api/v1/jobs/{world.path['job_id']}",
                      headers=world.researcher).status_code == 200
    assert client.get(f"/api/v1/jobs/{random_id}/output",
                      headers=world.researcher).status_code == 404
    assert client.get(f"/nowhere/{stray}").status_code == 404
    assert client.request("PROPFIND", "/healthz").status_code == 405

    figures = scrape(client)
    template = "/api/v1/jobs/{job_id}"
    requests = "hpcgw_http_requests_total"
    assert value(figures, requests, method="GET", route=template, status="404") >= 1
    assert value(figures, requests, method="GET", route=template, status="200") >= 1
    assert value(figures, requests, method="GET", route=f"{template}/output", status="404") >= 1
    assert value(figures, requests, method="GET", route=UNMATCHED, status="404") >= 1
    assert value(figures, requests, method="OTHER", route="/healthz", status="405") == 1
    assert value(figures, "hpcgw_http_request_duration_seconds_count",
                 method="GET", route=template) >= 2
    text = client.get("/metrics").text
    assert random_id not in text and stray not in text and world.path["job_id"] not in text
    # the registry is the process's: earlier tests' requests (web pages' among them) count too;
    # every API label is a template of the OpenAPI document
    templates = set(client.get("/openapi.json").json()["paths"])
    api_labels = {label for label in labels_of(figures, requests, "route")
                  if label.startswith("/api/")}
    assert api_labels <= templates


@pytest.fixture
def committed(settings: Settings, fresh_database: Database,
              tmp_path: Path) -> Iterator[tuple[TestClient, Seeded]]:
    """`seeded` on a database of its own: the tracker and the delivery worker run in threads
    of their own and see every commit."""
    configured = seeded_settings(settings, cluster_config(tmp_path / "cluster"))
    with fresh_database.transaction() as session:
        world = make_world(session)
    app = create_app(configured, database=fresh_database,
                     schedulers={CLUSTER: FakeScheduler(configured.clusters[0])})
    with TestClient(app) as client:
        yield client, seed(client, configured, world)


def test_jobs_quotas_tracker_and_webhooks(committed: tuple[TestClient, Seeded],
                                          fresh_database: Database) -> None:
    database = fresh_database
    client, world = committed
    app_settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    fake: FakeScheduler = client.app.state.schedulers[CLUSTER]  # type: ignore[attr-defined]
    before = scrape(client)

    expensive = job_body(world.world.project, resources={
        "partition": "gpu", "gpus": 8, "mem_mb": 1024, "time_limit_minutes": 1440})
    refused = client.post("/api/v1/jobs", headers=world.researcher, json=expensive)
    assert 400 <= refused.status_code < 500, refused.text
    accepted = client.post("/api/v1/jobs", headers=world.researcher,
                           json=job_body(world.world.project))
    assert accepted.status_code in (201, 202), accepted.text

    with receiver() as hook:
        made = client.post(
            f"/api/v1/members/acme/projects/{world.world.project.slug}/webhooks",
            headers=world.admin, json={"url": hook.url, "events": ["job.state_changed"]})
        assert made.status_code == 201, made.text
        for job in fake.jobs:
            fake.end(job)
        _one_tracker_cycle(database, fake, app_settings)
        # the seeded webhook (port 9: refused) fails for good at its first attempt
        once = app_settings.webhooks.model_copy(update={"max_attempts": 1})
        worker = DeliveryWorker(database, app_settings.model_copy(update={"webhooks": once}))
        assert anyio.run(worker.run_once) >= 2
        hook.wait_for(1)

    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("hpcgw_quota_refusals_total", cluster=CLUSTER) == 1
    assert grew("hpcgw_quota_holds_total", cluster=CLUSTER) == 1
    assert grew("hpcgw_quota_settlements_total", cluster=CLUSTER) == 2  # seeded job + this one
    assert grew("hpcgw_tracker_cycle_seconds_count", cluster=CLUSTER) == 1
    assert grew("hpcgw_webhook_attempts_total", outcome="delivered") >= 1
    assert grew("hpcgw_webhook_attempts_total", outcome="failed") >= 1
    assert grew("hpcgw_webhook_deliveries_failed_total") >= 1
    # jobs by cluster and state: the database's own counts, every state present
    with database.session() as session:
        counts = dict(session.execute(select(Job.state, func.count())
                                      .where(Job.cluster == CLUSTER).group_by(Job.state)).all())
    for state in JobState:
        assert value(after, "hpcgw_jobs", cluster=CLUSTER, state=state.value) == \
            counts.get(state, 0)
    assert counts.get(JobState.completed, 0) >= 2
    assert value(after, "hpcgw_database_up") == 1
    # the tracker handed its lease back when it stopped: nobody tracks the cluster now
    lease = ("hpcgw_tracker_lease_expires_in_seconds", frozenset({("cluster", CLUSTER)}))
    assert lease in after and after[lease] <= 0
    assert labels_of(after, "hpcgw_jobs", "cluster") == {CLUSTER}


def _one_tracker_cycle(database: Database, fake: FakeScheduler, settings: Settings) -> None:
    """The tracker's own loop (where its cycles are timed), stopped after one cycle."""
    tracker = ClusterTracker(database, Cluster(fake.config, fake), settings.jobs,
                             holder="metrics-test")
    cycles = TRACKER_CYCLE.labels(CLUSTER)

    def count() -> float:
        return next(s.value for m in cycles.collect() for s in m.samples
                    if s.name.endswith("_count"))

    async def main() -> None:
        first = count()
        stop = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(tracker.run, stop)
            with anyio.fail_after(10):
                while count() == first:  # noqa: ASYNC110 - the tracker runs in this loop
                    await anyio.sleep(0.01)
            stop.set()

    anyio.run(main)


WORKER = """
from gateway.metrics import observe_request
observe_request("GET", "/healthz", 200, 0.01)
"""
SCRAPE = """
import sys
from pathlib import Path
from gateway.db import Database
from gateway.metrics import exposition
Path(sys.argv[2]).write_bytes(exposition(Database(sys.argv[1]), ["c1"], ["pending"]))
"""


def test_multiprocess_mode_sums_the_workers(tmp_path: Path) -> None:
    """Each worker writes its figures in PROMETHEUS_MULTIPROC_DIR; /metrics sums them (and
    says so when the database does not answer: here it has no tables)."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, timeout=60)
    scraped = tmp_path / "scraped.txt"
    subprocess.run([sys.executable, "-c", SCRAPE, f"sqlite:///{tmp_path / 'empty.db'}",
                    str(scraped)], env=env, check=True, timeout=60, capture_output=True)
    text = scraped.read_text()
    figures = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert value(figures, "hpcgw_http_requests_total", method="GET", route="/healthz",
                 status="200") == 2
    assert value(figures, "hpcgw_database_up") == 0


@pytest.fixture
def slurm_client(settings: Settings, database: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings, database=database, schedulers={})) as client:
        yield client


@pytest.mark.slurm
def test_remote_commands_and_ssh_pool(testcluster: object, slurm_client: TestClient) -> None:
    config = testcluster.config()  # type: ignore[attr-defined]
    name = config.name
    before = scrape(slurm_client)

    async def twice() -> None:
        scheduler = SlurmSshScheduler(config)
        try:
            assert (await scheduler.health()).ok
            assert (await scheduler.health()).ok
            during = scrape(slurm_client)
            assert value(during, "hpcgw_ssh_connections_open", cluster=name) == \
                value(before, "hpcgw_ssh_connections_open", cluster=name) + 1
        finally:
            await scheduler.close()
        unreachable = SlurmSshScheduler(config.model_copy(update={"port": 1}))
        try:
            assert not (await unreachable.health()).ok
        finally:
            await unreachable.close()

    anyio.run(twice)
    after = scrape(slurm_client)

    def grew(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert grew("hpcgw_remote_commands_total", cluster=name, command="ScontrolPing") == 3
    assert grew("hpcgw_remote_command_failures_total", cluster=name, command="ScontrolPing",
                error="SchedulerUnavailable") == 1
    assert grew("hpcgw_ssh_connect_failures_total", cluster=name) == 1
    assert grew("hpcgw_ssh_connections_open", cluster=name) == 0  # closed with the scheduler
    assert value(after, "hpcgw_ssh_channels_in_use", cluster=name) == 0
