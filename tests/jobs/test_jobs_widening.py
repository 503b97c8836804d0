"""The tracker against a job Slurm holds wider than the gateway priced (an operator's `scontrol
update`, a member's ~/.bashrc exporting SBATCH_EXCLUSIVE): cancelled in the cycle that sees it,
ended `failed` with what was wider, an audit event, its hold settled on what it ran."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import CPU_WEIGHTS, World, cycle, submit
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.models import AuditEvent, User
from gateway.db import Database
from gateway.jobs.models import Job, JobEvent, JobState, JobTask
from gateway.jobs.widening import excess, held_statuses
from gateway.settings import Settings
from quotas.models import Hold, HoldState
from quotas.rates import Amounts, price
from schedulers.models import UNLIMITED_MINUTES, JobStatus
from schedulers.models import JobState as ClusterState

Headers = Callable[[User], dict[str, str]]
ONE_CPU = {"partition": "cpu", "nodes": 1, "ntasks": 1, "cpus_per_task": 1, "gpus": 0,
           "mem_mb": 1024, "time_limit_minutes": 60, "array": None}


def job_of(session: Session, public_id: str) -> Job:
    session.expire_all()
    return session.scalars(select(Job).where(Job.public_id == public_id)).one()


def submitted(client: TestClient, world: World, as_: Headers, session: Session,
              **overrides: object) -> tuple[str, str]:
    answer = submit(client, as_(world.researcher), world.project, **overrides)
    assert answer.status_code == 201, answer.text
    public_id = answer.json()["id"]
    return public_id, str(job_of(session, public_id).scheduler_id)


def audit_of(session: Session, public_id: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(
        AuditEvent.target_id == public_id, AuditEvent.action == "job.widened_cancel")))


def status(**sizes: object) -> JobStatus:
    return JobStatus.model_validate({"scheduler_id": "7", "state": ClusterState.pending,
                                     "raw_state": "PENDING", **sizes})


@pytest.mark.parametrize(("sizes", "expected"), [
    ({"cpus": 1, "mem_mb": 1024, "nodes": 1, "gpus": 0, "time_limit_minutes": 60,
      "exclusive": False}, []),
    ({}, []),  # a backend that says nothing: nothing compared
    ({"cpus": 4}, ["cpus 4 > 1"]),
    ({"mem_mb": 1034}, []),  # within the 1 % of Slurm's two-decimal units
    ({"mem_mb": 2048}, ["memory 2048 MB > 1024 MB"]),
    ({"nodes": 2, "gpus": 1}, ["nodes 2 > 1", "gpus 1 > 0"]),
    ({"time_limit_minutes": 61}, ["time limit 61 min > 60 min"]),
    ({"time_limit_minutes": UNLIMITED_MINUTES}, ["time limit unlimited > 60 min"]),
    ({"exclusive": True}, ["whole nodes (exclusive) where none was asked"]),
])
def test_each_way_slurm_holds_a_job_wider_is_named(sizes: dict[str, object],
                                                    expected: list[str]) -> None:
    assert excess(ONE_CPU, "7", [status(**sizes)]) == expected


@pytest.mark.parametrize(("cpus_per_core", "held", "expected"), [
    (2, 2, []),  # `-c 1` on whole cores of two threads: what Slurm allocates, not widened
    (2, 3, ["cpus 3 > 2"]),
    (1, 2, ["cpus 2 > 1"]),
])
def test_cpus_count_in_the_partitions_whole_cores(cpus_per_core: int, held: int,
                                                  expected: list[str]) -> None:
    assert excess(ONE_CPU, "7", [status(cpus=held)], cpus_per_core=cpus_per_core) == expected


def test_memory_is_compared_per_node_as_sbatch_got_it() -> None:
    two_nodes = ONE_CPU | {"nodes": 2, "mem_mb": 1001}  # --mem=501M per node: 1002 MB
    assert excess(two_nodes, "7", [status(nodes=2, mem_mb=1002)]) == []


def test_tasks_of_a_job_priced_without_any_are_more_array_tasks() -> None:
    statuses = {f"7_{t}": status().model_copy(update={"scheduler_id": f"7_{t}"})
                for t in range(3)}
    held = held_statuses("7", None, statuses | {"71": status()})
    assert [s.scheduler_id for s in held] == ["7_0", "7_1", "7_2"]
    assert excess(ONE_CPU, "7", held) == ["array tasks 3 > 1"]
    assert excess(ONE_CPU | {"array": "0-2"}, "7", held) == []
    assert excess(ONE_CPU | {"array": "0-1"}, "7", held) == ["array tasks 3 > 2"]


def test_a_pending_job_widened_by_an_admin_is_cancelled_and_ends_failed_uncharged(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id, sid = submitted(client, world, as_, session)
    fake.jobs[sid].widened = {"cpus": 4}
    report = cycle(database, fake, settings)
    assert fake.cancelled == [sid] and report.cancels_sent == 1
    detail = "Slurm held more than the gateway priced: cpus 4 > 1; cancelled"
    job = job_of(session, public_id)
    assert (job.state, job.detail) == (JobState.pending, detail)
    (event,) = audit_of(session, public_id)
    assert event.details == {"scheduler_id": sid, "excess": ["cpus 4 > 1"]}
    # Slurm ends it as cancelled before it ever ran: failed, nothing charged
    fake.jobs[sid].state = ClusterState.cancelled
    cycle(database, fake, settings)
    job = job_of(session, public_id)
    assert (job.state, job.detail, job.charge_msu) == (JobState.failed, detail, 0)
    hold = session.scalars(select(Hold).where(Hold.job_id == public_id)).one()
    assert hold.state == HoldState.settled
    assert len(audit_of(session, public_id)) == 1 and fake.cancelled == [sid]


def test_a_running_job_held_exclusive_and_longer_is_charged_what_it_ran(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id, sid = submitted(client, world, as_, session)
    fake.run(sid)
    fake.jobs[sid].widened = {"exclusive": True, "time_limit_minutes": 600}
    cycle(database, fake, settings)
    assert fake.cancelled == [sid]
    fake.end(sid, ClusterState.cancelled, seconds=120)
    cycle(database, fake, settings)
    job = job_of(session, public_id)
    assert job.state == JobState.failed
    assert job.detail == ("Slurm held more than the gateway priced: time limit 600 min > "
                          "60 min, whole nodes (exclusive) where none was asked; cancelled")
    assert job.charge_msu == price(CPU_WEIGHTS, Amounts(gpus=0, cpus=1, mem_mb=1024), 120) > 0


def test_a_cancel_that_did_not_take_is_sent_again_but_recorded_once(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id, sid = submitted(client, world, as_, session)
    fake.jobs[sid].widened = {"mem_mb": 4096}
    cycle(database, fake, settings)
    cycle(database, fake, settings)  # still listed live: sent again
    assert fake.cancelled == [sid, sid] and len(audit_of(session, public_id)) == 1


def test_a_job_held_as_priced_is_never_cancelled(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id, sid = submitted(client, world, as_, session, resources={
        "partition": "cpu", "nodes": 2, "ntasks": 2, "cpus_per_task": 2, "mem_mb": 1001,
        "time_limit_minutes": 30})
    fake.run(sid)
    cycle(database, fake, settings)
    fake.end(sid, ClusterState.completed, seconds=60)
    cycle(database, fake, settings)
    job = job_of(session, public_id)
    assert (job.state, job.detail, fake.cancelled) == (JobState.completed, None, [])


def test_an_array_with_one_task_held_wider_is_cancelled_whole_and_ends_failed(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id, sid = submitted(client, world, as_, session, resources={
        "partition": "cpu", "mem_mb": 1024, "time_limit_minutes": 60, "array": "0-2"})
    fake.run(f"{sid}_0")
    fake.jobs[f"{sid}_1"].widened = {"gpus": 2}
    cycle(database, fake, settings)
    assert fake.cancelled == [sid]
    fake.end(f"{sid}_0", ClusterState.cancelled, seconds=30)
    for task in (1, 2):
        fake.jobs[f"{sid}_{task}"].state = ClusterState.cancelled
    cycle(database, fake, settings)
    job = job_of(session, public_id)
    assert job.state == JobState.failed
    detail = "Slurm held more than the gateway priced: gpus 2 > 0; cancelled"
    last = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                           .order_by(JobEvent.id.desc())).first()
    assert last is not None and last.detail == f"{detail} (tasks: 3 cancelled)"
    assert job.detail == detail
    assert job.charge_msu == price(CPU_WEIGHTS, Amounts(gpus=0, cpus=1, mem_mb=1024), 30)
    assert len(session.scalars(select(JobTask).where(JobTask.job_id == job.id)).all()) == 3
