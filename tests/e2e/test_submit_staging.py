"""A project's next submission is staged (sbatch started, waiting for its script) while its job
is accepted; the script goes only after the commit, and a submission refused meanwhile leaves
nothing in Slurm. On the test cluster, through the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from e2e_helpers import World, script_job, slurm_jobs_with_marker, until_ended
from factories import auth_headers
from fastapi.testclient import TestClient
from sqlalchemy import update

from consortium.models import Member
from gateway.db import Database
from gateway.settings import Settings
from schedulers.base import Staged
from schedulers.models import Identity, JobSpec, Submitted
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"


def _scheduler(client: TestClient) -> SlurmSshScheduler:
    (scheduler,) = client.app.state.schedulers.values()  # type: ignore[attr-defined]
    assert isinstance(scheduler, SlurmSshScheduler)
    return scheduler


def _channels_in_use(scheduler: SlurmSshScheduler) -> int:
    return sum(c.in_use for p in scheduler.transport._pools.values() for c in p._conns)


def test_the_next_submission_is_staged_and_one_refused_after_staging_leaves_nothing(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = auth_headers(settings, world.alice)
    scheduler = _scheduler(gateway)
    staged: list[str] = []  # markers of the staged submissions
    plain: list[str] = []  # markers submitted without staging
    stage, submit = scheduler.stage, scheduler.submit

    def spy_stage(identity: Identity, spec: JobSpec) -> Staged:
        staged.append(spec.marker)
        return stage(identity, spec)

    async def spy_submit(identity: Identity, spec: JobSpec) -> Submitted:
        plain.append(spec.marker)
        return await submit(identity, spec)

    monkeypatch.setattr(scheduler, "stage", spy_stage)
    monkeypatch.setattr(scheduler, "submit", spy_submit)
    # running long enough to count against the cap when the third one comes
    body = script_job(world.alpha_project, "#!/bin/bash\necho staged\nsleep 6\n")

    first = gateway.post(JOBS, headers=alice, json=body)
    second = gateway.post(JOBS, headers=alice, json=body)

    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
    # the project's first submission shows where its jobs go; the next is staged
    assert plain == [first.json()["marker"]]
    assert staged == [second.json()["marker"]]
    for answer in (first, second):
        job = answer.json()
        assert job["state"] == "pending" and job["scheduler_id"]
        events = job["events"]
        assert [e["to_state"] for e in events] == ["accepted", "submitting", "pending"]
        assert events[0]["at"] == job["created_at"]
        assert sorted(e["at"] for e in events) == [e["at"] for e in events]
        assert slurm_jobs_with_marker(testcluster, job["marker"]) == {job["scheduler_id"]}

    # refused after its sbatch was staged: the member's cap is reached
    with fresh_database.transaction() as session:
        session.execute(update(Member).where(Member.id == world.alpha.id)
                        .values(max_active_jobs=2))
    refused = gateway.post(JOBS, headers=alice, json=body)
    assert refused.status_code == 409, refused.text
    assert len(staged) == 2 and len(plain) == 1
    for job in (first.json(), second.json()):
        ended = until_ended(gateway, alice, job["id"])
        assert ended["state"] == "completed", ended
        assert gateway.get(f"{JOBS}/{job['id']}/output", headers=alice).json()["data"] == (
            "staged\n")
    assert slurm_jobs_with_marker(testcluster, staged[1]) == set()
    assert _channels_in_use(scheduler) == 0
