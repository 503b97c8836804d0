"""The tracker: one squeue and at most one sacct per cycle, every change an event, each end
settled through the quota service, one tracker per cluster, backoff while the cluster is down."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import CPU_WEIGHTS, World, cycle, submit
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import User
from gateway.db import Database
from gateway.jobs.clusters import Cluster
from gateway.jobs.models import Job, JobEvent, JobState, TrackerLease
from gateway.jobs.tracker import ClusterTracker, backoff
from gateway.settings import Settings
from quotas.models import EntryKind, Hold, HoldState, LedgerEntry
from quotas.rates import Amounts, price
from schedulers.errors import SchedulerTimeout
from schedulers.models import JobState as ClusterState

Headers = Callable[[User], dict[str, str]]


def job_of(session: Session, public_id: str) -> Job:
    session.expire_all()
    return session.scalars(select(Job).where(Job.public_id == public_id)).one()


def submit_many(client: TestClient, world: World, as_: Headers, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        answer = submit(client, as_(world.researcher), world.project)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    return ids


def test_a_cycle_makes_one_states_and_one_accounting_call_for_all_the_jobs(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    ids = submit_many(client, world, as_, 6)
    slurm = [job_of(session, i).scheduler_id for i in ids]
    fake.run(slurm[0])
    fake.run(slurm[1])
    fake.end(slurm[2], ClusterState.completed, seconds=60)
    fake.end(slurm[3], ClusterState.failed, seconds=60, exit_code=2)
    fake.jobs[slurm[4]].reason = "Resources"
    fake.calls.clear()
    report = cycle(database, fake, settings)
    assert (fake.calls["states"], fake.calls["accounting"]) == (1, 1)
    assert (report.states_calls, report.accounting_calls, report.tracked) == (1, 1, 6)
    states = [job_of(session, i).state for i in ids]
    assert states == [JobState.running, JobState.running, JobState.completed, JobState.failed,
                      JobState.pending, JobState.pending]
    assert job_of(session, ids[3]).exit_code == 2
    assert job_of(session, ids[4]).pending_reason == "Resources"
    # nothing changed on the cluster: one squeue, no sacct, no write
    fake.calls.clear()
    quiet = cycle(database, fake, settings)
    assert (fake.calls["states"], fake.calls["accounting"], quiet.changes) == (1, 0, [])


def test_an_ended_job_is_charged_rate_times_elapsed_and_its_hold_settled(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    (public_id,) = submit_many(client, world, as_, 1)
    slurm_id = job_of(session, public_id).scheduler_id
    assert slurm_id is not None
    fake.run(slurm_id)
    cycle(database, fake, settings)
    fake.end(slurm_id, ClusterState.completed, seconds=1234)
    cycle(database, fake, settings)
    job = job_of(session, public_id)
    expected = price(CPU_WEIGHTS, Amounts(gpus=0, cpus=1, mem_mb=1024), 1234)
    assert job.state == JobState.completed and job.elapsed_seconds == 1234
    assert job.charge_msu == expected == 86 and job.refund_msu == 0
    assert job.exit_code == 0 and job.alloc_cpus == 1 and job.ended_at is not None
    hold = session.scalars(select(Hold).where(Hold.job_id == public_id)).one()
    assert hold.state == HoldState.settled and hold.charged_msu == expected
    events = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                             .order_by(JobEvent.id)).all()
    assert [e.to_state for e in events] == [JobState.accepted, JobState.submitting,
                                            JobState.pending, JobState.running,
                                            JobState.completed]
    assert events[-1].at == job.ended_at
    shown = client.get(f"/api/v1/jobs/{public_id}", headers=as_(world.researcher)).json()
    assert shown["charge_msu"] == expected and shown["state"] == "completed"


def test_a_node_failure_is_refunded_automatically(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    (public_id,) = submit_many(client, world, as_, 1)
    slurm_id = job_of(session, public_id).scheduler_id
    assert slurm_id is not None
    fake.end(slurm_id, ClusterState.node_fail, seconds=3600)
    cycle(database, fake, settings)
    job = job_of(session, public_id)
    assert job.state == JobState.node_fail
    assert job.charge_msu == job.refund_msu == 250
    kinds = [e.kind for e in session.scalars(
        select(LedgerEntry).where(LedgerEntry.job_id == public_id).order_by(LedgerEntry.id))]
    assert kinds == [EntryKind.hold, EntryKind.release, EntryKind.charge, EntryKind.refund]


def test_the_pending_reason_is_shown_as_a_sentence(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings) -> None:
    (public_id,) = submit_many(client, world, as_, 1)
    fake.only().reason = "AssocGrpBillingMinutes"
    cycle(database, fake, settings)
    shown = client.get(f"/api/v1/jobs/{public_id}", headers=as_(world.researcher)).json()
    assert shown["pending_reason"] == "AssocGrpBillingMinutes"
    assert "allocation on the cluster is used up" in shown["pending_reason_text"]


def test_a_job_gone_from_queue_and_accounting_is_declared_lost_after_the_grace(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    (public_id,) = submit_many(client, world, as_, 1)
    fake.only().in_queue = fake.only().in_accounting = False
    now = utcnow()
    clock = [now]
    tracker = ClusterTracker(database, Cluster(fake.config, fake), settings.jobs,
                             holder="t", clock=lambda: clock[0])
    assert anyio.run(tracker.cycle).changes == []  # sacct may lag: not yet
    clock[0] = now + timedelta(hours=1)
    assert anyio.run(tracker.cycle).changes == [(public_id, JobState.pending, JobState.failed)]
    job = job_of(session, public_id)
    assert "vanished" in (job.detail or "") and job.charge_msu == 0


def test_a_cancel_asked_while_the_submission_was_in_doubt_is_sent_once_found(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings) -> None:
    from schedulers.errors import SchedulerTimeout

    fake.lost_answer = SchedulerTimeout("no answer")
    public_id = submit(client, as_(world.researcher), world.project).json()["id"]
    cancel = client.post(f"/api/v1/jobs/{public_id}/cancel", headers=as_(world.researcher))
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
    assert fake.calls["cancel"] == 0  # no id yet
    report = cycle(database, fake, settings)
    assert report.cancels_sent == 1 and fake.cancelled == [fake.only().id]


def test_a_job_found_by_its_marker_keeps_slurms_submit_time_not_the_discovery_time(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    fake.lost_answer = SchedulerTimeout("no answer")
    public_id = submit(client, as_(world.researcher), world.project).json()["id"]
    submitted = utcnow().replace(microsecond=0) - timedelta(minutes=40)  # gateway was down
    fake.only().submit = submitted
    report = cycle(database, fake, settings)
    assert report.changes == [(public_id, JobState.unknown, JobState.pending)]
    assert job_of(session, public_id).submitted_at == submitted


def test_a_job_found_by_its_marker_without_a_submit_time_gets_the_discovery_time(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    fake.lost_answer = SchedulerTimeout("no answer")
    public_id = submit(client, as_(world.researcher), world.project).json()["id"]
    fake.only().submit = None
    discovered = utcnow() + timedelta(minutes=5)
    report = cycle(database, fake, settings, clock=lambda: discovered)
    assert report.changes == [(public_id, JobState.unknown, JobState.pending)]
    assert job_of(session, public_id).submitted_at == discovered


# --- one tracker per cluster ---------------------------------------------------------------

def test_two_trackers_on_one_cluster_only_one_acts(
        committed: tuple[World, TestClient], fresh_database: Database, fake: FakeScheduler,
        settings: Settings, as_: Headers) -> None:
    world, client = committed
    for _ in range(3):
        assert submit(client, as_(world.researcher), world.project).status_code == 201
    for job in fake.jobs.values():
        fake.end(job.id, ClusterState.completed, seconds=60)
    fake.calls.clear()
    cluster = Cluster(fake.config, fake)
    first = ClusterTracker(fresh_database, cluster, settings.jobs, holder="replica-a")
    second = ClusterTracker(fresh_database, cluster, settings.jobs, holder="replica-b")
    reports = []

    async def both() -> None:
        async def one(tracker: ClusterTracker) -> None:
            reports.append(await tracker.cycle())
        async with anyio.create_task_group() as group:
            group.start_soon(one, first)
            group.start_soon(one, second)

    anyio.run(both)
    assert sorted(r.leader for r in reports) == [False, True]
    assert (fake.calls["states"], fake.calls["accounting"]) == (1, 1)
    with fresh_database.session() as session:
        ended = session.scalars(select(Job.state)).all()
        assert set(ended) == {JobState.completed}
        settled = session.scalars(select(Hold.state)).all()
        assert settled == [HoldState.settled] * 3
        lease = session.get(TrackerLease, fake.config.name)
        assert lease is not None
        leader = lease.holder
    # the leader keeps it; the other gets it once the leader hands it back
    follower = second if leader == "replica-a" else first
    holder = first if follower is second else second
    assert anyio.run(follower.cycle).leader is False
    stop = anyio.Event()
    stop.set()
    anyio.run(holder.run, stop)  # a stopped tracker hands its lease back
    assert anyio.run(follower.cycle).leader is True


def test_an_expired_lease_is_taken_over(fresh_database: Database, fake: FakeScheduler,
                                        settings: Settings) -> None:
    cluster = Cluster(fake.config, fake)
    dead = ClusterTracker(fresh_database, cluster, settings.jobs, holder="dead")
    assert anyio.run(dead.cycle).leader is True
    alive = ClusterTracker(fresh_database, cluster, settings.jobs, holder="alive")
    assert anyio.run(alive.cycle).leader is False
    later = ClusterTracker(fresh_database, cluster, settings.jobs, holder="alive",
                           clock=lambda: utcnow() + timedelta(hours=1))
    assert anyio.run(later.cycle).leader is True


# --- a cluster that is down ----------------------------------------------------------------

def test_backoff_doubles_per_failure_up_to_its_cap() -> None:
    assert [backoff(5, n, 60) for n in range(6)] == [5, 10, 20, 40, 60, 60]


def test_the_loop_backs_off_while_the_cluster_is_down_and_resumes(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    (public_id,) = submit_many(client, world, as_, 1)
    fake.down = True
    fake.calls.clear()
    quick = settings.jobs.model_copy(update={"tracker_interval_seconds": 0.01,
                                             "tracker_max_backoff_seconds": 0.16})
    tracker = ClusterTracker(database, Cluster(fake.config, fake), quick, holder="t")

    async def run_until(calls: int) -> float:
        """Seconds the loop took to make `calls` squeue calls (at most 10)."""
        stop = anyio.Event()
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            group.start_soon(tracker.run, stop)
            with anyio.fail_after(10):
                while fake.calls["states"] < calls:  # noqa: ASYNC110 (the fake has no event)
                    await anyio.sleep(0.005)
            stop.set()
        return time.monotonic() - started

    # six calls: at least 0.02+0.04+0.08+0.16+0.16 s apart with backoff, 0.05 s without;
    # a slow machine only makes it longer, so the bound holds under any load
    assert anyio.run(run_until, 6) >= 0.45
    fake.down = False
    fake.end(fake.only().id, ClusterState.completed, seconds=30)
    fake.calls.clear()
    anyio.run(run_until, 1)
    assert job_of(session, public_id).state == JobState.completed


@pytest.mark.parametrize("state", [ClusterState.timeout, ClusterState.out_of_memory,
                                   ClusterState.cancelled])
def test_every_end_is_recorded_and_charged(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session,
        state: ClusterState) -> None:
    (public_id,) = submit_many(client, world, as_, 1)
    fake.end(fake.only().id, state, seconds=3600)
    cycle(database, fake, settings)
    job = job_of(session, public_id)
    assert job.state.value == state.value and job.charge_msu == 250


def test_serve_runs_the_tracker_in_its_lifespan(
        fresh_database: Database, fake: FakeScheduler, settings: Settings,
        as_: Headers) -> None:
    from jobs_helpers import make_world

    from gateway.api.app import create_app

    with fresh_database.transaction() as session:
        world = make_world(session)
    tracking = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"tracker_in_serve": True, "tracker_interval_seconds": 0.05})})
    app = create_app(tracking, database=fresh_database, schedulers={fake.config.name: fake})
    with TestClient(app) as client:
        public_id = submit(client, as_(world.researcher), world.project).json()["id"]
        fake.end(fake.only().id, ClusterState.completed, seconds=60)
        deadline = utcnow() + timedelta(seconds=10)
        state = "pending"
        while state != "completed" and utcnow() < deadline:
            state = client.get(f"/api/v1/jobs/{public_id}",
                               headers=as_(world.researcher)).json()["state"]
    assert state == "completed"
    with fresh_database.session() as session:
        lease = session.get(TrackerLease, fake.config.name)
        assert lease is not None and lease.expires_at <= utcnow()  # handed back on shutdown


def test_state_changes_are_published_to_listeners_inside_the_transaction(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    from gateway.jobs import transitions

    published: list[tuple[str, str | None, str]] = []

    def listener(tx: Session, job: Job, event: JobEvent) -> None:
        assert event in tx  # written with the transaction's next flush
        tx.flush()
        assert event.id is not None and tx.get(JobEvent, event.id) is event
        published.append((job.public_id, event.from_state, event.to_state))

    transitions.on_state_change(listener)
    try:
        (public_id,) = submit_many(client, world, as_, 1)
        fake.end(fake.only().id, ClusterState.completed, seconds=60)
        cycle(database, fake, settings)
    finally:
        transitions.remove_listener(listener)
    assert published == [(public_id, None, "accepted"), (public_id, "accepted", "submitting"),
                         (public_id, "submitting", "pending"),
                         (public_id, "pending", "completed")]


def test_a_job_whose_settlement_fails_does_not_hold_up_the_others(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.jobs import tracker as tracker_module

    broken, fine = submit_many(client, world, as_, 2)
    for job in fake.jobs.values():
        fake.end(job.id, ClusterState.completed, seconds=60)
    real_settle = tracker_module.quotas.settle

    def settle(tx: Session, job_id: str, *args: object, **kwargs: object) -> object:
        if job_id == broken:
            raise OverflowError("date value out of range")
        return real_settle(tx, job_id, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tracker_module.quotas, "settle", settle)
    report = cycle(database, fake, settings)
    assert report.failures == 1
    assert job_of(session, fine).state == JobState.completed
    assert job_of(session, broken).state == JobState.pending  # untouched, retried next cycle
    monkeypatch.setattr(tracker_module.quotas, "settle", real_settle)
    cycle(database, fake, settings)
    assert job_of(session, broken).state == JobState.completed
