"""Job arrays with the fake scheduler: quoted and held as tasks x one task's cost, each task
followed, settled and refunded on its own, the job's state and charge their aggregate, the
member's cap counting tasks, output read per task, cancel for all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import CPU_WEIGHTS, World, cycle, submit
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.models import User
from gateway.db import Database
from gateway.jobs.models import Job, JobEvent, JobState, JobTask
from gateway.jobs.tasks import array_state
from gateway.settings import Settings
from quotas.ledger import verify
from quotas.models import Allocation, EntryKind, Hold, HoldState, LedgerEntry
from quotas.rates import Amounts, price
from schedulers.models import JobState as ClusterState

Headers = Callable[[User], dict[str, str]]
# one task: 1 CPU, 1 GiB for an hour on the cpu partition = 0.25 SU
TASK_QUOTE = price(CPU_WEIGHTS, Amounts(cpus=1, mem_mb=1024), 3600)


def resources(array: str | None) -> dict[str, Any]:
    return {"partition": "cpu", "mem_mb": 1024, "time_limit_minutes": 60, "array": array}


def submit_array(client: TestClient, world: World, as_: Headers, array: str = "0-5%2") -> str:
    answer = submit(client, as_(world.researcher), world.project, resources=resources(array))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def job_of(session: Session, public_id: str) -> Job:
    session.expire_all()
    return session.scalars(select(Job).where(Job.public_id == public_id)).one()


def hold_of(session: Session, public_id: str) -> Hold:
    return session.scalars(select(Hold).where(Hold.job_id == public_id)).one()


def shown(client: TestClient, world: World, as_: Headers, public_id: str) -> dict[str, Any]:
    answer = client.get(f"/api/v1/jobs/{public_id}", headers=as_(world.researcher))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def charge(seconds: int) -> int:
    return price(CPU_WEIGHTS, Amounts(cpus=1, mem_mb=1024), seconds)


def test_the_jobs_state_is_its_tasks_aggregate_in_the_documented_order() -> None:
    s = JobState
    assert array_state([s.completed, s.running, s.pending]) is s.running
    assert array_state([s.completed, s.pending]) is s.pending
    assert array_state([s.completed] * 3) is s.completed
    assert array_state([s.completed, s.cancelled, s.failed, s.timeout]) is s.failed
    assert array_state([s.completed, s.cancelled, s.node_fail]) is s.node_fail
    assert array_state([s.completed, s.cancelled]) is s.cancelled
    assert array_state([s.timeout, s.out_of_memory]) is s.out_of_memory


def test_an_array_is_quoted_and_held_as_its_tasks_times_one_tasks_cost(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    public_id = submit_array(client, world, as_, "0-10:2%2")

    job = job_of(session, public_id)
    assert (job.task_count, job.quote_msu) == (6, 6 * TASK_QUOTE)
    assert hold_of(session, public_id).amount_msu == 6 * TASK_QUOTE == 1500
    (sent,) = {fake.jobs[t].spec.resources.array for t in fake.arrays[str(job.scheduler_id)]}
    assert sent == "0-10:2%2"  # canonical, steps kept (gateway.jobs.arrays)
    body = shown(client, world, as_, public_id)
    assert (body["array"], body["tasks"], body["array_tasks"]) == (sent, {"pending": 6}, [])


def test_the_tracker_follows_every_task_and_settles_each_once(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id = submit_array(client, world, as_)
    array_id = str(job_of(session, public_id).scheduler_id)
    task = [f"{array_id}_{t}" for t in range(6)]
    fake.run(task[0])
    fake.run(task[1])
    cycle(database, fake, settings)
    body = shown(client, world, as_, public_id)
    assert (body["state"], body["tasks"]) == ("running", {"pending": 4, "running": 2})
    assert [t["scheduler_id"] for t in body["array_tasks"]] == task

    fake.end(task[0], seconds=100)
    fake.end(task[1], seconds=200)
    fake.run(task[2])
    report = cycle(database, fake, settings)
    assert (report.states_calls, report.accounting_calls) == (1, 1)
    body = shown(client, world, as_, public_id)
    assert body["tasks"] == {"completed": 2, "pending": 3, "running": 1}
    assert [t["charge_msu"] for t in body["array_tasks"][:3]] == [charge(100), charge(200),
                                                                  None]
    # each ended task gave back its share of the hold
    assert hold_of(session, public_id).amount_msu == 4 * TASK_QUOTE

    revision = job_of(session, public_id).revision
    fake.calls.clear()
    quiet = cycle(database, fake, settings)
    assert (fake.calls["accounting"], quiet.changes) == (0, [])
    assert job_of(session, public_id).revision == revision

    for t, seconds in zip(task[2:5], (300, 400, 500), strict=True):
        fake.end(t, seconds=seconds)
    fake.end(task[5], ClusterState.failed, seconds=50, exit_code=3)
    cycle(database, fake, settings)
    cycle(database, fake, settings)  # nothing is settled twice

    job = job_of(session, public_id)
    expected = sum(charge(s) for s in (100, 200, 300, 400, 500, 50))
    assert (job.state, job.exit_code, job.charge_msu, job.refund_msu) == (
        JobState.failed, 3, expected, 0)
    assert job.elapsed_seconds == 1550
    hold = hold_of(session, public_id)
    assert (hold.state, hold.charged_msu) == (HoldState.settled, expected)
    charges = session.scalars(select(LedgerEntry.amount_msu).where(
        LedgerEntry.job_id == public_id, LedgerEntry.kind == EntryKind.charge)).all()
    assert sorted(-c for c in charges) == sorted(charge(s) for s in (100, 200, 300, 400, 500,
                                                                     50))
    allocation = session.get_one(Allocation, hold.allocation_id, populate_existing=True)
    assert (allocation.held_msu, allocation.charged_msu) == (0, expected)
    assert verify(session) == []
    body = shown(client, world, as_, public_id)
    assert body["tasks"] == {"completed": 5, "failed": 1}
    assert body["array_tasks"][5]["exit_code"] == 3
    last = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                           .order_by(JobEvent.id.desc())).first()
    assert last is not None and last.detail == "tasks: 5 completed, 1 failed"


def test_a_task_killed_by_a_node_failure_is_refunded_and_the_others_charged(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id = submit_array(client, world, as_, "0-2")
    array_id = job_of(session, public_id).scheduler_id
    fake.end(f"{array_id}_0", seconds=600)
    fake.end(f"{array_id}_1", ClusterState.node_fail, seconds=1200)
    fake.end(f"{array_id}_2", seconds=600)
    cycle(database, fake, settings)

    job = job_of(session, public_id)
    assert job.state == JobState.node_fail
    assert (job.charge_msu, job.refund_msu) == (2 * charge(600) + charge(1200), charge(1200))
    refunded = session.scalars(select(JobTask).where(JobTask.job_id == job.id,
                                                     JobTask.refund_msu > 0)).all()
    assert [t.task_id for t in refunded] == [1]


def test_cancel_cancels_every_task_and_unstarted_tasks_cost_nothing(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id = submit_array(client, world, as_)
    array_id = str(job_of(session, public_id).scheduler_id)
    fake.run(f"{array_id}_0")
    cycle(database, fake, settings)
    answer = client.post(f"/api/v1/jobs/{public_id}/cancel", headers=as_(world.researcher))
    assert answer.status_code == 202
    assert fake.cancelled == [array_id]  # scancel of the array stops all its tasks

    fake.end(f"{array_id}_0", ClusterState.cancelled, seconds=30)
    for t in range(1, 6):
        fake.end(f"{array_id}_{t}", ClusterState.cancelled, seconds=0)
    cycle(database, fake, settings)

    job = job_of(session, public_id)
    assert (job.state, job.charge_msu) == (JobState.cancelled, charge(30))
    hold = hold_of(session, public_id)
    allocation = session.get_one(Allocation, hold.allocation_id, populate_existing=True)
    assert (hold.state, allocation.held_msu, allocation.charged_msu) == (
        HoldState.settled, 0, charge(30))
    assert shown(client, world, as_, public_id)["tasks"] == {"cancelled": 6}


def test_the_active_job_cap_counts_an_arrays_tasks(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    world.acme.max_active_jobs = 5
    session.flush()
    refused = submit(client, as_(world.researcher), world.project, resources=resources("0-5"))
    assert refused.status_code == 409
    assert refused.json()["type"] == "/problems/too-many-jobs"
    assert "this array adds 6" in refused.json()["detail"]
    submit_array(client, world, as_, "0-3")
    assert submit(client, as_(world.researcher), world.project).status_code == 201
    assert submit(client, as_(world.researcher), world.project).status_code == 409


def test_a_backend_without_arrays_refuses_them_up_front(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    fake.supports_arrays = False
    answer = submit(client, as_(world.researcher), world.project, resources=resources("0-3"))
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["body", "resources", "array"]
    assert fake.calls["submit"] == 0


def test_each_tasks_output_is_read_with_task_and_only_with_a_task_of_the_array(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id = submit_array(client, world, as_, "1,3")
    array_id = str(job_of(session, public_id).scheduler_id)
    first = fake.jobs[f"{array_id}_1"]
    stem = first.spec.stdout.removesuffix(".out")
    fake.files[(first.identity.work_root, f"{stem}_3.out")] = b"task 3\n"
    fake.end(f"{array_id}_3", seconds=5)
    cycle(database, fake, settings)
    url = f"/api/v1/jobs/{public_id}/output"
    headers = as_(world.researcher)

    read = client.get(url, params={"task": 3}, headers=headers).json()
    assert (read["data"], read["task"], read["complete"]) == ("task 3\n", 3, True)
    unwritten = client.get(url, params={"task": 1}, headers=headers).json()
    assert (unwritten["data"], unwritten["complete"]) == ("", False)
    for params in ({}, {"task": 2}):
        refused = client.get(url, params=params, headers=headers)
        assert refused.status_code == 422, params
        assert refused.json()["errors"][0]["loc"] == ["query", "task"]
    single = submit(client, headers, world.project).json()["id"]
    refused = client.get(f"/api/v1/jobs/{single}/output", params={"task": 0}, headers=headers)
    assert refused.status_code == 422


@pytest.mark.parametrize("array", ["5-1", "0-1001", "1,x", "0-3%0"])
def test_an_array_spec_slurm_would_not_take_is_refused_naming_the_field(
        *, client: TestClient, world: World, as_: Headers, array: str) -> None:
    answer = submit(client, as_(world.researcher), world.project, resources=resources(array))
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"][:3] == ["body", "resources", "array"]


def test_a_change_of_a_task_alone_moves_its_jobs_revision_for_the_read_cache(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id = submit_array(client, world, as_, "0-2")
    array_id = job_of(session, public_id).scheduler_id
    fake.run(f"{array_id}_0")
    cycle(database, fake, settings)
    assert shown(client, world, as_, public_id)["tasks"] == {"pending": 2, "running": 1}
    job = job_of(session, public_id)
    before = (job.revision, job.updated_at)

    fake.run(f"{array_id}_1")  # the job stays running: only a task's row changes
    cycle(database, fake, settings)

    job = job_of(session, public_id)
    assert job.updated_at == before[1] and job.revision > before[0]
    assert shown(client, world, as_, public_id)["tasks"] == {"pending": 1, "running": 2}
    revision = job.revision
    task = session.scalars(select(JobTask).where(JobTask.job_id == job.id)).first()
    assert task is not None
    session.delete(task)
    session.flush()
    assert job_of(session, public_id).revision > revision


def test_an_array_asked_by_the_scripts_directive_is_followed_to_its_end(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    # the case: `#SBATCH --array=0-5` used to leave the job pending for ever
    script = "#!/bin/bash\n#SBATCH --array=0-5\necho $SLURM_ARRAY_TASK_ID\n"
    answer = submit(client, as_(world.researcher), world.project, script=script)
    assert answer.status_code == 201, answer.text
    public_id, array_id = answer.json()["id"], answer.json()["scheduler_id"]
    assert (answer.json()["array"], answer.json()["quote_msu"]) == ("0-5", 6 * TASK_QUOTE)

    for t in range(6):
        fake.end(f"{array_id}_{t}", seconds=60)
    cycle(database, fake, settings)

    job = job_of(session, public_id)
    assert (job.state, job.charge_msu) == (JobState.completed, 6 * charge(60))
