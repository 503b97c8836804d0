"""The test cluster with slurmctld stopped: the first submission fails after sbatch's own
timeout, the next ones within a second (the gateway knows the cluster is down), and the retry
that Retry-After invites, with the same Idempotency-Key, is submitted once the cluster is back.
The cluster is always brought back up (`restore_cluster`)."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from e2e_helpers import (
    World,
    hold_state,
    ledger_kinds,
    open_holds,
    script_job,
    slurm_jobs_with_marker,
    until_ended,
    wait_for,
)
from factories import auth_headers
from fastapi.testclient import TestClient

from gateway.db import Database
from gateway.jobs import health
from gateway.jobs.service import marker_for
from gateway.settings import Settings
from quotas.models import EntryKind, HoldState

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"


def timed_post(client: TestClient, headers: dict[str, str], body: dict[str, Any]
               ) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = client.post(JOBS, headers=headers, json=body)
    return answer, time.monotonic() - started


def test_slurmctld_down_fails_fast_once_known_and_the_retry_with_its_key_succeeds_after(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        restore_cluster: Cluster) -> None:
    cluster = settings.clusters[0].name
    headers = {**auth_headers(settings, world.bob), "Idempotency-Key": f"o-{uuid.uuid4()}"}
    body = script_job(world.beta_project, "#!/bin/bash\nsleep 1\n", name="maintenance-eve")
    restore_cluster.control("stop", "slurmctld")

    first, first_seconds = timed_post(gateway, headers, body)
    assert first.status_code == 503, first.text
    assert first.headers["retry-after"] == "30"
    failed = first.json()["job"]
    assert gateway.get(f"{JOBS}/{failed}", headers=headers).json()["state"] == "submit_failed"
    assert ledger_kinds(fresh_database, failed) == [EntryKind.hold, EntryKind.release]

    # known down: the same request (its key was not kept) and another one, at once
    again, again_seconds = timed_post(gateway, headers, body)
    other, other_seconds = timed_post(gateway, auth_headers(settings, world.alice), script_job(
        world.alpha_project, "#!/bin/bash\nsleep 1\n", name="other"))
    for refused in (again, other):
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "30"
        assert "nothing was submitted and nothing held" in refused.json()["detail"]
        assert "job" not in refused.json()  # nothing written
    assert again_seconds < 1.0 and other_seconds < 1.0
    print(f"\nslurmctld stopped: first 503 after {first_seconds:.2f} s, then "
          f"{again_seconds:.3f} s and {other_seconds:.3f} s")

    restore_cluster.control("up")
    up_at = time.monotonic()

    def retried() -> httpx.Response | None:
        answer = gateway.post(JOBS, headers=headers, json=body)
        return answer if answer.status_code == 201 else None
    submitted: httpx.Response = wait_for("the retry with the same key is submitted", retried,
                                         within=90, every=1.0)
    print(f"the retry with the same key: 201 {time.monotonic() - up_at:.1f} s after `up`")
    job = submitted.json()
    assert job["id"] != failed
    replay = gateway.post(JOBS, headers=headers, json=body)  # now the key keeps the job
    assert (replay.status_code, replay.json()["id"]) == (201, job["id"])

    ended = until_ended(gateway, headers, job["id"], within=90)
    assert ended["state"] == "completed", ended
    assert slurm_jobs_with_marker(restore_cluster, marker_for(cluster, job["id"])) == {
        ended["scheduler_id"]}
    assert slurm_jobs_with_marker(restore_cluster, marker_for(cluster, failed)) == set()
    assert hold_state(fresh_database, failed) == HoldState.released
    assert open_holds(fresh_database) == 0


def test_a_tracker_cycle_that_cannot_reach_slurmctld_makes_the_next_submission_fail_fast(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        restore_cluster: Cluster) -> None:
    alice, bob = auth_headers(settings, world.alice), auth_headers(settings, world.bob)
    running = gateway.post(JOBS, headers=alice, json=script_job(
        world.alpha_project, "#!/bin/bash\nsleep 15\n", name="tracked"))
    assert running.status_code == 201, running.text
    tracked = running.json()["id"]
    wait_for("the job runs", lambda: gateway.get(f"{JOBS}/{tracked}", headers=alice)
             .json()["state"] == "running", within=30)
    restore_cluster.control("stop", "slurmctld")
    stopped_at = time.monotonic()
    scheduler = gateway.app.state.schedulers[settings.clusters[0].name]  # type: ignore[attr-defined]
    # the tracker's squeue fails after Slurm's own timeout
    wait_for("a tracker cycle fails", lambda: health.known_down(scheduler), within=60)
    print(f"\nthe tracker found slurmctld down {time.monotonic() - stopped_at:.1f} s after "
          "it stopped")

    refused, seconds = timed_post(gateway, bob, script_job(
        world.beta_project, "#!/bin/bash\nsleep 1\n", name="first-after-the-outage"))
    assert refused.status_code == 503, refused.text
    assert seconds < 1.0 and "job" not in refused.json()
    print(f"after a failed tracker cycle, the first submission: 503 in {seconds:.3f} s")

    restore_cluster.control("up")
    ended = until_ended(gateway, alice, tracked, within=90)
    assert ended["state"] == "completed", ended
    assert open_holds(fresh_database) == 0
