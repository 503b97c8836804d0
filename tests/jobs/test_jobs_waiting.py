"""Submissions that wait for their cluster (gateway/jobs/waiting.py): accepted `waiting` with
their hold, forwarded by the tracker in submission order, exactly once, once the cluster
answers; cancelled or failed at their cap with the hold released; maintenance windows."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import World, cluster_config, cycle, job_body
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import User
from gateway.cli.submit import state_line
from gateway.db import Database
from gateway.jobs.clusters import Cluster
from gateway.jobs.models import Job, JobState
from gateway.jobs.tracker import ClusterTracker
from gateway.settings import Settings
from quotas.models import EntryKind, Hold, HoldState, LedgerEntry
from schedulers.config import ClusterConfig, MaintenanceWindow
from schedulers.errors import SchedulerTimeout, SchedulerUnavailable

Headers = Callable[[User], dict[str, str]]
JOBS = "/api/v1/jobs"
QUEUE = {"when_unavailable": "queue"}


@pytest.fixture
def cluster_updates() -> dict[str, Any]:
    """Changes to the `test` cluster's configuration (parametrized by the tests needing one)."""
    return {}


@pytest.fixture
def config(tmp_path: Path, cluster_updates: dict[str, Any]) -> ClusterConfig:
    return cluster_config(tmp_path / "cluster").model_copy(update=cluster_updates)


def window(start: timedelta, end: timedelta, reason: str = "OS upgrade") -> MaintenanceWindow:
    now = utcnow()
    return MaintenanceWindow(start=now + start, end=now + end, reason=reason)


IN_A_WINDOW = {"maintenance": [window(-timedelta(hours=1), timedelta(hours=2))]}


def post(client: TestClient, headers: dict[str, str], project: object, *,
         key: str | None = None, **fields: Any) -> tuple[int, dict[str, Any]]:
    extra = {"Idempotency-Key": key} if key else {}
    answer = client.post(JOBS, headers={**headers, **extra}, json=job_body(project, **fields))
    return answer.status_code, answer.json()


def job_of(session: Session, public_id: str) -> Job:
    session.expire_all()
    return session.scalars(select(Job).where(Job.public_id == public_id)).one()


def ledger(session: Session, public_id: str) -> list[EntryKind]:
    return list(session.scalars(select(LedgerEntry.kind).where(LedgerEntry.job_id == public_id)
                                .order_by(LedgerEntry.id)))


def hold_of(session: Session, public_id: str) -> HoldState:
    return session.scalars(select(Hold.state).where(Hold.job_id == public_id)).one()


def sent_names(fake: FakeScheduler) -> list[str]:
    """The jobs on the fake cluster by Slurm id, i.e. in the order they were submitted."""
    return [job.spec.name for _, job in sorted(fake.jobs.items(), key=lambda kv: int(kv[0]))]


def waiting_jobs(client: TestClient, headers: dict[str, str], world: World, fake: FakeScheduler,
                 count: int, **fields: Any) -> list[str]:
    """`count` jobs accepted to wait while the fake cluster is down."""
    fake.down = True
    ids = []
    for n in range(count):
        status, job = post(client, headers, world.project, name=f"w{n}", **QUEUE, **fields)
        assert (status, job["state"]) == (202, "waiting"), job
        ids.append(job["id"])
    return ids


# --- accepted to wait ---------------------------------------------------------------------

def test_a_queued_submission_to_a_cluster_down_is_accepted_waiting_with_its_hold(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, settings: Settings) -> None:
    fake.down = True
    before = utcnow()
    status, first = post(client, as_(world.researcher), world.project, **QUEUE)
    assert (status, first["state"], first["scheduler_id"]) == (202, "waiting", None)
    assert first["detail"] == "cluster unavailable: connection refused"
    cap = timedelta(minutes=settings.jobs.max_wait_minutes)
    wait_until = datetime.fromisoformat(first["wait_until"])
    assert before + cap <= wait_until <= utcnow() + cap
    # its sbatch found the cluster down: the events say so, the hold stays
    assert [(e["from_state"], e["to_state"]) for e in first["events"]] == [
        (None, "accepted"), ("accepted", "submitting"), ("submitting", "waiting")]
    assert first["events"][-1]["detail"] == first["detail"]
    assert hold_of(session, first["id"]) == HoldState.open
    assert ledger(session, first["id"]) == [EntryKind.hold]
    # the cluster is known down now: the next one waits without an sbatch
    status, second = post(client, as_(world.researcher), world.project, **QUEUE)
    assert (status, second["state"]) == (202, "waiting")
    assert [e["to_state"] for e in second["events"]] == ["accepted", "waiting"]
    assert fake.calls["submit"] == 1 and fake.jobs == {}
    listed = client.get(JOBS, params={"state": "waiting"}, headers=as_(world.researcher))
    assert {j["id"] for j in listed.json()["items"]} == {first["id"], second["id"]}
    assert second["detail"] == "cluster unavailable: fake"  # what the probe said
    until = datetime.fromisoformat(second["wait_until"])
    assert state_line(second).endswith(
        f"waiting, cluster unavailable: fake, at most until {until:%Y-%m-%d %H:%M} UTC")


def test_without_queue_a_cluster_down_still_fails_and_holds_nothing(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    fake.down = True
    status, problem = post(client, as_(world.researcher), world.project)
    assert (status, problem["type"]) == (503, "/problems/cluster-unavailable")
    assert hold_of(session, problem["job"]) == HoldState.released


@pytest.mark.parametrize("cluster_updates", [{"when_unavailable": "queue"}])
def test_the_clusters_default_makes_submissions_wait_unless_they_ask_to_fail(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    fake.down = True
    status, job = post(client, as_(world.researcher), world.project)
    assert (status, job["state"]) == (202, "waiting")
    status, problem = post(client, as_(world.researcher), world.project,
                           when_unavailable="fail")
    assert (status, problem["type"]) == (503, "/problems/cluster-unavailable")


# --- forwarded in order, exactly once --------------------------------------------------------

def test_waiting_jobs_are_forwarded_oldest_first_once_the_cluster_answers(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, database: Database, settings: Settings) -> None:
    ids = waiting_jobs(client, as_(world.researcher), world, fake, 4)
    report = cycle(database, fake, settings)  # still down: nothing sent, nothing lost
    assert (report.forwarded, fake.jobs) == (0, {})
    fake.down = False
    report = cycle(database, fake, settings)
    assert report.forwarded == 4
    assert sent_names(fake) == ["w0", "w1", "w2", "w3"]
    assert [job_of(session, i).scheduler_id for i in ids] == sorted(fake.jobs, key=int)
    job = client.get(f"{JOBS}/{ids[0]}", headers=as_(world.researcher)).json()
    assert job["state"] == "pending" and job["detail"] is None
    assert [e["to_state"] for e in job["events"]][-3:] == ["waiting", "submitting", "pending"]
    assert cycle(database, fake, settings).forwarded == 0  # and never again
    assert len(fake.jobs) == 4 and fake.calls["submit"] == 1 + 4
    assert {hold_of(session, i) for i in ids} == {HoldState.open}


def test_a_forward_that_finds_the_cluster_down_again_keeps_the_order(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, database: Database, settings: Settings) -> None:
    ids = waiting_jobs(client, as_(world.researcher), world, fake, 3)
    fake.down = False
    fake.submit_error = SchedulerUnavailable("connection reset", cluster=fake.name)
    assert cycle(database, fake, settings).forwarded == 0
    assert fake.calls["submit"] == 1 + 1  # the first failed; the others were not tried
    first = job_of(session, ids[0])
    assert (first.state, first.detail) == (JobState.waiting, "cluster unavailable: "
                                                              "connection reset")
    fake.submit_error = None
    assert cycle(database, fake, settings).forwarded == 3
    assert sent_names(fake) == ["w0", "w1", "w2"]


def test_a_forward_whose_answer_is_lost_is_settled_by_marker_never_sent_twice(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, database: Database, settings: Settings) -> None:
    (public_id,) = waiting_jobs(client, as_(world.researcher), world, fake, 1)
    fake.down = False
    fake.lost_answer = SchedulerTimeout("sbatch did not answer in 60 s")
    cycle(database, fake, settings)
    assert job_of(session, public_id).state == JobState.unknown
    fake.lost_answer = None
    cycle(database, fake, settings)  # found by its marker
    job = job_of(session, public_id)
    assert job.state == JobState.pending and job.scheduler_id == fake.only().id
    assert fake.calls["submit"] == 1 + 1


def test_two_forwarders_racing_send_each_job_once(
        committed: tuple[World, TestClient], fresh_database: Database, fake: FakeScheduler,
        settings: Settings, as_: Headers) -> None:
    world, client = committed
    ids = waiting_jobs(client, as_(world.researcher), world, fake, 5)
    fake.down = False
    cluster = Cluster(fake.config, fake)
    # replicas: one lease; the same holder twice (two loops of one process): both fenced in,
    # the committed waiting → submitting lets one of them send each job
    trackers = [ClusterTracker(fresh_database, cluster, settings.jobs, holder=holder)
                for holder in ("replica-a", "replica-b", "replica-a")]

    async def race() -> None:
        async with anyio.create_task_group() as group:
            for tracker in trackers:
                group.start_soon(tracker.cycle)

    anyio.run(race)
    markers = [job.spec.marker for job in fake.jobs.values()]
    assert len(markers) == len(set(markers)) == 5
    assert fake.calls["submit"] == 1 + 5
    with fresh_database.session() as session:
        states = {job_of(session, i).state for i in ids}
    assert states == {JobState.pending}


# --- cancelled, or failed at its cap ---------------------------------------------------------

def test_cancelling_a_waiting_job_ends_it_without_slurm_and_releases_its_hold(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, database: Database, settings: Settings) -> None:
    cancelled, kept = waiting_jobs(client, as_(world.researcher), world, fake, 2)
    answer = client.post(f"{JOBS}/{cancelled}/cancel", headers=as_(world.researcher))
    assert (answer.status_code, answer.json()["state"]) == (200, "cancelled")
    assert answer.json()["events"][-1]["from_state"] == "waiting"
    assert fake.calls["cancel"] == 0
    assert hold_of(session, cancelled) == HoldState.released
    assert ledger(session, cancelled) == [EntryKind.hold, EntryKind.release]
    fake.down = False
    assert cycle(database, fake, settings).forwarded == 1
    assert sent_names(fake) == ["w1"] and job_of(session, kept).state == JobState.pending


def test_a_wait_past_its_cap_fails_and_releases_the_hold(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, database: Database, settings: Settings) -> None:
    short, long = waiting_jobs(client, as_(world.researcher), world, fake, 2)
    session.execute(Job.__table__.update().where(Job.public_id == short).values(
        wait_until=utcnow() + timedelta(minutes=5)))
    later = utcnow() + timedelta(minutes=6)
    report = cycle(database, fake, settings, clock=lambda: later)  # the cluster still down
    assert report.changes == [(short, JobState.waiting, JobState.submit_failed)]
    job = job_of(session, short)
    assert job.state == JobState.submit_failed and "max_wait_minutes" in (job.detail or "")
    assert hold_of(session, short) == HoldState.released
    assert ledger(session, short) == [EntryKind.hold, EntryKind.release]
    assert job_of(session, long).state == JobState.waiting and fake.jobs == {}


def test_a_request_may_ask_a_shorter_wait_not_a_longer_one(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        settings: Settings) -> None:
    fake.down = True
    status, job = post(client, as_(world.researcher), world.project, max_wait_minutes=30,
                       **QUEUE)
    assert status == 202
    waited = datetime.fromisoformat(job["wait_until"]) - datetime.fromisoformat(
        job["created_at"])
    assert timedelta(minutes=29) < waited <= timedelta(minutes=30, seconds=5)
    refused = [
        post(client, as_(world.researcher), world.project,
             max_wait_minutes=settings.jobs.max_wait_minutes + 1, **QUEUE),
        post(client, as_(world.researcher), world.project, max_wait_minutes=30,
             when_unavailable="fail"),
        post(client, as_(world.researcher), world.project, when_unavailable="later"),
        post(client, as_(world.researcher), world.project, max_wait_minutes=0, **QUEUE),
    ]
    for status, problem in refused:
        assert (status, problem["type"]) == (422, "/problems/validation"), problem
    assert "max_wait_minutes" in str(refused[0][1]["errors"])


# --- maintenance windows ---------------------------------------------------------------------

@pytest.mark.parametrize("cluster_updates", [IN_A_WINDOW])
def test_in_a_maintenance_window_submissions_wait_untried_until_it_ends(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, database: Database, settings: Settings,
        config: ClusterConfig) -> None:
    (declared,) = config.maintenance
    status, job = post(client, as_(world.researcher), world.project)  # up, but in the window
    assert (status, job["state"]) == (202, "waiting")
    assert job["detail"].startswith("maintenance window until ")
    assert job["detail"].endswith("UTC: OS upgrade")
    cap = timedelta(minutes=settings.jobs.max_wait_minutes)
    assert datetime.fromisoformat(job["wait_until"]) == declared.end + cap
    # Retry-After: the window's rest in whole seconds, rounded up, as of the request
    most = math.ceil((declared.end - utcnow()).total_seconds())
    status, problem = post(client, as_(world.researcher), world.project,
                           when_unavailable="fail")
    assert (status, problem["type"]) == (503, "/problems/cluster-unavailable")
    least = (declared.end - utcnow()).total_seconds()
    assert least - 5 < problem["retry_after"] <= most and "job" not in problem
    assert cycle(database, fake, settings).forwarded == 0  # the window is on: not tried
    assert fake.calls["submit"] == 0
    after = declared.end + timedelta(seconds=1)
    assert cycle(database, fake, settings, clock=lambda: after).forwarded == 1
    assert job_of(session, job["id"]).state == JobState.pending


def test_a_window_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="ends after it starts"):
        window(timedelta(hours=1), timedelta(0))


# --- idempotency ------------------------------------------------------------------------------

def test_a_replay_of_a_waiting_jobs_request_answers_that_job(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, database: Database, settings: Settings) -> None:
    fake.down = True
    status, job = post(client, as_(world.researcher), world.project, key="w-1", **QUEUE)
    assert (status, job["state"]) == (202, "waiting")
    assert post(client, as_(world.researcher), world.project, key="w-1", **QUEUE) == (
        202, job)
    fake.down = False
    cycle(database, fake, settings)
    status, again = post(client, as_(world.researcher), world.project, key="w-1", **QUEUE)
    assert (status, again["id"]) == (202, job["id"])
    assert len(session.scalars(select(Job)).all()) == 1 and len(fake.jobs) == 1
