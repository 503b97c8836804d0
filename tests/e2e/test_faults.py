"""Faults on the test cluster (issue 5, item 10): the gateway killed between sbatch's answer and
storing the id, sshd lost around a submission, slurmctld down. Whatever happens: no job lost,
none submitted twice, no hold left open, one charge per job that ran. The cluster is always
brought back up (`restore_cluster`)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from e2e_helpers import (
    World,
    charges,
    hold_state,
    ledger_kinds,
    mem_mb,
    open_holds,
    script_job,
    slurm_accounting,
    slurm_jobs_with_marker,
    until_ended,
    wait_for,
)
from factories import auth_headers
from fastapi.testclient import TestClient
from gateway_processes import GatewayProcess
from sqlalchemy import select

from gateway.db import Database
from gateway.jobs.models import Job, JobState
from gateway.settings import Settings
from quotas.models import EntryKind, HoldState
from quotas.rates import Amounts, price
from schedulers.models import Identity
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler
from schedulers.slurm_ssh.transport import Result

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"


def _jobs_of(database: Database) -> list[Job]:
    with database.transaction(write=False) as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def test_gateway_killed_after_sbatch_answered_leaves_one_slurm_job_one_row_one_charge(
        *, world: World, settings: Settings, fresh_database: Database, testcluster: Cluster,
        tmp_path: Path) -> None:
    alice = auth_headers(settings, world.alice)
    body = script_job(world.alpha_project, "#!/bin/bash\necho trained\nsleep 2\n",
                      name="killed-gateway")
    dying = GatewayProcess(settings, fresh_database, tmp_path / "dying.log",
                           die_after_sbatch=True, tracker_in_serve=False)

    with dying.running():
        with pytest.raises(httpx.TransportError):
            dying.client.post(JOBS, headers=alice, json=body)
        assert dying.process.wait(timeout=30) == -signal.SIGKILL

    (returned,) = dying.output()
    sbatch_id = returned["sbatch_returned"]
    # what the killed gateway left: the row committed as `submitting`, no id, its hold
    (row,) = _jobs_of(fresh_database)
    assert row.state == JobState.submitting and row.scheduler_id is None
    assert ledger_kinds(fresh_database, row.public_id) == [EntryKind.hold]
    assert slurm_jobs_with_marker(testcluster, row.marker) == {sbatch_id}

    # restarted: its tracker finds the job by its marker and follows it to the end
    restarted = GatewayProcess(settings, fresh_database, tmp_path / "restarted.log",
                               submit_grace_seconds=1.0)
    with restarted.running():
        job = until_ended(restarted.client, alice, row.public_id)
        listed = restarted.client.get(JOBS, headers=alice).json()["items"]

    assert job["state"] == "completed", job
    assert job["scheduler_id"] == sbatch_id
    states = [e["to_state"] for e in job["events"]]
    assert states[:3] == ["accepted", "submitting", "pending"] and states[-1] == "completed"
    assert job["events"][2]["detail"] == f"found by its marker: slurm id {sbatch_id}"
    assert [j["id"] for j in listed] == [row.public_id]
    assert len(_jobs_of(fresh_database)) == 1
    assert slurm_jobs_with_marker(testcluster, row.marker) == {sbatch_id}
    assert job["charge_msu"] > 0
    assert charges(fresh_database, row.public_id) == [job["charge_msu"]]
    assert hold_state(fresh_database, row.public_id) == HoldState.settled


def _scheduler(client: TestClient) -> SlurmSshScheduler:
    (scheduler,) = client.app.state.schedulers.values()  # type: ignore[attr-defined]
    assert isinstance(scheduler, SlurmSshScheduler)
    return scheduler


def test_submit_with_sshd_down_is_refused_with_503_and_retry_after_and_its_hold_released(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        restore_cluster: Cluster) -> None:
    alice = auth_headers(settings, world.alice)
    first = gateway.post(JOBS, headers=alice,
                         json=script_job(world.alpha_project, "#!/bin/bash\nsleep 1\n"))
    assert first.status_code == 201, first.text  # the pool holds a live connection now

    restore_cluster.control("stop", "sshd")
    _scheduler(gateway).transport.break_connections()  # what the network does to live ones
    started = time.monotonic()
    refused = gateway.post(JOBS, headers=alice,
                           json=script_job(world.alpha_project, "#!/bin/bash\ntrue\n"))
    took = time.monotonic() - started

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["content-type"] == "application/problem+json"
    assert took < 10
    body = refused.json()
    if "job" in body:  # tried: recorded as failed, its hold released, nothing on the cluster
        job = gateway.get(f"{JOBS}/{body['job']}", headers=alice).json()  # no SSH to read
        assert job["state"] == "submit_failed" and job["scheduler_id"] is None
        assert ledger_kinds(fresh_database, body["job"]) == [EntryKind.hold, EntryKind.release]
        assert hold_state(fresh_database, body["job"]) == HoldState.released
        restore_cluster.control("up")
        assert slurm_jobs_with_marker(restore_cluster, job["marker"]) == set()
    else:  # a tracker cycle found sshd down first: refused fast, before anything was recorded
        assert took < 1.0, took
        assert [job.public_id for job in _jobs_of(fresh_database)] == [first.json()["id"]]
        restore_cluster.control("up")
    again = gateway.post(JOBS, headers=alice,
                         json=script_job(world.alpha_project, "#!/bin/bash\ntrue\n"))
    assert again.status_code == 201, again.text
    for public in (first.json()["id"], again.json()["id"]):
        assert until_ended(gateway, alice, public)["state"] == "completed"
    assert open_holds(fresh_database) == 0


# sbatch's answer held back on the cluster: the job is in Slurm, its id not yet sent back
SLOW_ANSWER = 'out=$("$@"); status=$?; sleep 30; printf "%s\\n" "$out"; exit "$status"'


def test_sshd_lost_while_sbatch_answers_gives_202_unknown_and_never_a_second_job(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        restore_cluster: Cluster) -> None:
    """sbatch has run; before its answer arrives sshd stops and the connection drops. The
    submitter cannot know: 202 `unknown`. A retry with the same Idempotency-Key gets the same
    job; the tracker finds it by its marker once sshd is back, and it is charged once."""
    alice = auth_headers(settings, world.alice)
    transport = _scheduler(gateway).transport
    run = transport.run
    in_slurm: set[str] = set()

    async def sbatch_then_lose_the_connection(identity: Identity, argv: list[str],
                                              **kwargs: Any) -> Result:
        if argv[:1] != ["sbatch"]:
            return await run(identity, argv, **kwargs)
        marker = next(a.removeprefix("--comment=") for a in argv
                      if a.startswith("--comment="))
        answer = asyncio.ensure_future(run(identity, ["sh", "-c", SLOW_ANSWER, "sh", *argv],
                                           **kwargs))

        def cut_once_slurm_has_it() -> None:
            try:
                in_slurm.update(wait_for(
                    "Slurm has the job", lambda: slurm_jobs_with_marker(restore_cluster, marker),
                    within=20))
                restore_cluster.control("stop", "sshd")
            finally:
                transport.break_connections()

        await anyio.to_thread.run_sync(cut_once_slurm_has_it)
        return await answer

    transport.run = sbatch_then_lose_the_connection  # type: ignore[method-assign,assignment]
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = script_job(world.alpha_project, "#!/bin/bash\necho ran once\nsleep 2\n",
                      name="lost-answer")

    answer = gateway.post(JOBS, headers=alice | key, json=body)

    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["state"] == "unknown" and job["scheduler_id"] is None
    assert "SSH connection lost" in job["detail"]
    (slurm_id,) = in_slurm
    transport.run = run  # type: ignore[method-assign]
    replay = gateway.post(JOBS, headers=alice | key, json=body)
    assert replay.status_code == 202 and replay.json()["id"] == job["id"]
    assert hold_state(fresh_database, job["id"]) == HoldState.open

    restore_cluster.control("up")
    ended = until_ended(gateway, alice, job["id"])

    assert ended["state"] == "completed" and ended["scheduler_id"] == slurm_id
    assert f"found by its marker: slurm id {slurm_id}" in [e["detail"] for e in ended["events"]]
    assert gateway.get(f"{JOBS}/{job['id']}/output", headers=alice).json()["data"] == "ran once\n"
    assert slurm_jobs_with_marker(restore_cluster, job["marker"]) == {slurm_id}
    assert [j["id"] for j in gateway.get(JOBS, headers=alice).json()["items"]] == [job["id"]]
    assert ended["charge_msu"] > 0
    assert charges(fresh_database, job["id"]) == [ended["charge_msu"]]
    assert hold_state(fresh_database, job["id"]) == HoldState.settled
    again = gateway.post(JOBS, headers=alice | key, json=body)
    assert again.status_code == 202 and again.json()["id"] == job["id"]


def test_slurmctld_down_refuses_with_503_releases_the_hold_and_tracking_resumes_after(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        restore_cluster: Cluster) -> None:
    alice, bob = auth_headers(settings, world.alice), auth_headers(settings, world.bob)
    before = gateway.post(JOBS, headers=alice, json=script_job(
        world.alpha_project, "#!/bin/bash\necho start\nsleep 20\necho end\n", name="survivor"))
    assert before.status_code == 201, before.text
    survivor = before.json()["id"]
    wait_for("the job runs", lambda: gateway.get(f"{JOBS}/{survivor}", headers=alice)
             .json()["state"] == "running", within=30)

    restore_cluster.control("stop", "slurmctld")
    refused = gateway.post(JOBS, headers=bob,
                           json=script_job(world.beta_project, "#!/bin/bash\ntrue\n"))

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "30"
    assert "Unable to contact slurm controller" in refused.json()["detail"]
    public_id = refused.json()["job"]
    job = gateway.get(f"{JOBS}/{public_id}", headers=bob).json()
    assert job["state"] == "submit_failed"
    assert ledger_kinds(fresh_database, public_id) == [EntryKind.hold, EntryKind.release]
    assert hold_state(fresh_database, public_id) == HoldState.released
    # the running job is still `running` for the gateway: an outage is not an end
    assert gateway.get(f"{JOBS}/{survivor}", headers=alice).json()["state"] == "running"

    restore_cluster.control("up")
    ended = until_ended(gateway, alice, survivor, within=120)

    assert ended["state"] == "completed" and ended["exit_code"] == 0, ended
    assert [e["to_state"] for e in ended["events"]] == [
        "accepted", "submitting", "pending", "running", "completed"]
    out = gateway.get(f"{JOBS}/{survivor}/output", headers=alice).json()["data"]
    assert out == "start\nend\n"
    accounted = slurm_accounting(restore_cluster, ended["scheduler_id"])
    assert ended["elapsed_seconds"] == accounted.elapsed_seconds >= 20
    weights = settings.clusters[0].partitions[0].billing
    allocated = Amounts(cpus=int(accounted.alloc_tres["cpu"]),
                        mem_mb=mem_mb(accounted.alloc_tres["mem"]))
    assert ended["charge_msu"] == price(weights, allocated, accounted.elapsed_seconds) > 0
    assert charges(fresh_database, survivor) == [ended["charge_msu"]]
    assert open_holds(fresh_database) == 0
