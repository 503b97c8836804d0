"""Job arrays on the test cluster, through the API: every task followed to its end, the job's
charge the sum of its tasks' (Slurm's AllocTRES billing x elapsed, read over OpenSSH), the hold
released, each task's output readable; a cancel stops every task."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pytest
from e2e_helpers import (
    World,
    charges,
    hold_state,
    ledger_kinds,
    script_job,
    until_ended,
    wait_for,
)
from factories import auth_headers
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.db import Database
from gateway.settings import Settings
from quotas.models import EntryKind, HoldState, LedgerEntry

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"


def slurm_tasks(testcluster: Cluster, array_id: str) -> dict[str, tuple[int, int, str]]:
    """Each task's (billing, elapsed seconds, state) as sacct has it, by task id (`7_3`), the
    never-started tasks' shared line (`7_[2-5%2]`) included as it is."""
    done = testcluster.shell("ADMIN", f"sacct -X -n -P -j {int(array_id)} "
                                      "-o JobID,AllocTRES,ElapsedRaw,State")
    assert done.returncode == 0, done.stderr
    tasks = {}
    for line in done.stdout.splitlines():
        job_id, tres, elapsed, state = line.split("|")
        billing = dict(i.split("=", 1) for i in tres.split(",") if i).get("billing", "0")
        tasks[job_id] = (int(billing), int(elapsed), state)
    return tasks


def charge_of(billing: int, elapsed: int) -> int:
    # billing is the rate in milli-SU per hour (slurm_billing_scale = 1000, MAX_TRES)
    return math.ceil(billing * elapsed / 3600)


def released(database: Database, public_id: str) -> int:
    with database.transaction(write=False) as session:
        return sum(session.scalars(select(LedgerEntry.amount_msu).where(
            LedgerEntry.job_id == public_id, LedgerEntry.kind == EntryKind.release)))


def test_an_array_runs_every_task_and_is_charged_the_sum_of_their_use(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster) -> None:
    alice = auth_headers(settings, world.alice)
    body = script_job(world.alpha_project,
                      "#!/bin/bash\necho task $SLURM_ARRAY_TASK_ID\nsleep 1\n",
                      time_limit_minutes=1, array="0-5%2")

    answer = gateway.post(JOBS, headers=alice, json=body)

    assert answer.status_code == 201, answer.text
    submitted = answer.json()
    public_id, array_id = submitted["id"], submitted["scheduler_id"]
    assert submitted["quote_msu"] == 6 * charge_of(250, 60)  # 6 x (1 CPU for 1 minute)
    job: dict[str, Any] = until_ended(gateway, alice, public_id, within=120)
    assert job["state"] == "completed", job
    assert job["tasks"] == {"completed": 6}
    slurm = slurm_tasks(testcluster, array_id)
    assert set(slurm) == {f"{array_id}_{t}" for t in range(6)}
    expected = [charge_of(billing, elapsed) for billing, elapsed, _ in slurm.values()]
    assert job["charge_msu"] == sum(expected) and job["refund_msu"] == 0
    assert sorted(charges(fresh_database, public_id)) == sorted(expected)
    assert [(t["scheduler_id"], t["elapsed_seconds"]) for t in job["array_tasks"]] == [
        (f"{array_id}_{t}", slurm[f"{array_id}_{t}"][1]) for t in range(6)]
    assert hold_state(fresh_database, public_id) is HoldState.settled
    assert released(fresh_database, public_id) == job["quote_msu"]
    for task in (0, 5):
        output = gateway.get(f"{JOBS}/{public_id}/output", params={"task": task},
                             headers=alice).json()
        assert (output["data"], output["complete"]) == (f"task {task}\n", True)


def test_an_array_cancelled_midway_ends_cancelled_and_gives_back_what_it_did_not_use(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster) -> None:
    alice = auth_headers(settings, world.alice)
    body = script_job(world.alpha_project, "#!/bin/bash\nsleep 50\n", time_limit_minutes=1,
                      array="0-5%2")
    public_id = gateway.post(JOBS, headers=alice, json=body).json()["id"]

    def running() -> dict[str, Any] | None:
        job: dict[str, Any] = gateway.get(f"{JOBS}/{public_id}", headers=alice).json()
        return job if job["tasks"].get("running") else None
    array_id = wait_for("a task running", running, within=60)["scheduler_id"]
    cancel = gateway.post(f"{JOBS}/{public_id}/cancel", headers=alice)
    assert cancel.status_code == 202, cancel.text

    job = until_ended(gateway, alice, public_id, within=90)

    assert job["state"] == "cancelled"
    assert job["tasks"] == {"cancelled": 6}
    slurm = slurm_tasks(testcluster, array_id)
    assert {state.split()[0] for _, _, state in slurm.values()} == {"CANCELLED"}
    ran = [charge_of(billing, elapsed) for billing, elapsed, _ in slurm.values()]
    assert job["charge_msu"] == sum(ran) < job["quote_msu"]
    assert hold_state(fresh_database, public_id) is HoldState.settled
    assert released(fresh_database, public_id) == job["quote_msu"]
    assert ledger_kinds(fresh_database, public_id)[0] is EntryKind.hold
