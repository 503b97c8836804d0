"""The test cluster with slurmctld stopped: the first submission fails after sbatch's own
timeout, the next ones within a second (the gateway knows the cluster is down), and the retry
that Retry-After invites, with the same Idempotency-Key, is submitted once the cluster is back.
Submissions that ask to wait (`when_unavailable: queue`) are forwarded once it is back, in
order, each once, by the gateway that waited or by a restarted one. The cluster is always
brought back up (`restore_cluster`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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
from gateway_processes import GatewayProcess

from gateway.db import Database
from gateway.jobs import health
from gateway.jobs.submission import marker_for
from gateway.settings import Settings
from quotas.models import EntryKind, HoldState

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"


@contextmanager
def outage(cluster: Cluster) -> Iterator[None]:
    """slurmctld stopped for the block (the test starts it again when it wants); the cluster
    up again at the end whatever happens."""
    try:
        cluster.control("stop", "slurmctld")
        yield
    finally:
        cluster.control("up")


class Api(Protocol):
    """The in-process TestClient, or an httpx.Client on a gateway process."""

    def get(self, url: str, *, headers: dict[str, str]) -> httpx.Response: ...
    def post(self, url: str, *, headers: dict[str, str], json: Any = None) -> httpx.Response: ...


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


# --- submissions that wait for the cluster ------------------------------------------------------

def submit_five_to_wait(api: Api, world: World, settings: Settings) -> tuple[list[str], str]:
    """Five jobs sent while slurmctld is down, all accepted to wait (202), the third then
    cancelled: (the four left in submission order, the cancelled one)."""
    bob = auth_headers(settings, world.bob)
    ids = []
    for n in range(5):
        body = {**script_job(world.beta_project, "#!/bin/bash\nsleep 1\n", name=f"wait{n}"),
                "when_unavailable": "queue"}
        answer, seconds = timed_post(api, bob, body)  # type: ignore[arg-type]
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["state"] == "waiting" and job["detail"].startswith("cluster unavailable")
        print(f"waiting job {n} accepted in {seconds:.2f} s")
        ids.append(job["id"])
    cancelled = api.post(f"{JOBS}/{ids[2]}/cancel", headers=bob)
    assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")
    return [i for i in ids if i != ids[2]], ids[2]


def forwarded_in_order(api: Api, world: World, settings: Settings, *, cluster: Cluster,
                       database: Database, kept: list[str], cancelled: str) -> None:
    """Start slurmctld: the four forwarded, each once, in submission order, and ending
    completed with their charges; the cancelled one never reaches Slurm."""
    bob = auth_headers(settings, world.bob)
    started = time.monotonic()
    cluster.control("up")
    up = time.monotonic()

    def all_sent() -> list[str] | None:
        jobs = [api.get(f"{JOBS}/{i}", headers=bob).json() for i in kept]
        sent = [j["scheduler_id"] for j in jobs]
        return sent if all(sent) else None
    slurm_ids: list[str] = wait_for("the waiting jobs are forwarded", all_sent, within=120)
    done = time.monotonic()
    print(f"slurmctld started in {up - started:.1f} s; the four waiting jobs forwarded "
          f"{done - up:.1f} s later ({done - started:.1f} s after the start began)")
    assert [int(i) for i in slurm_ids] == sorted(int(i) for i in slurm_ids)  # in order
    name = settings.clusters[0].name
    for public_id, slurm_id in zip(kept, slurm_ids, strict=True):
        assert slurm_jobs_with_marker(cluster, marker_for(name, public_id)) == {slurm_id}
        ended = until_ended(api, bob, public_id, within=120)  # type: ignore[arg-type]
        assert ended["state"] == "completed", ended
        states = [e["to_state"] for e in ended["events"]]
        waited = states.index("waiting")
        assert states[waited:waited + 3] == ["waiting", "submitting", "pending"], states
        assert ledger_kinds(database, public_id)[:1] == [EntryKind.hold]
        assert hold_state(database, public_id) == HoldState.settled
    assert slurm_jobs_with_marker(cluster, marker_for(name, cancelled)) == set()
    assert hold_state(database, cancelled) == HoldState.released
    assert ledger_kinds(database, cancelled) == [EntryKind.hold, EntryKind.release]
    assert open_holds(database) == 0


def test_jobs_sent_to_wait_while_slurmctld_is_down_are_forwarded_once_in_order(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        restore_cluster: Cluster) -> None:
    with outage(restore_cluster):
        print()
        kept, cancelled = submit_five_to_wait(gateway, world, settings)
        forwarded_in_order(gateway, world, settings, cluster=restore_cluster,
                           database=fresh_database, kept=kept, cancelled=cancelled)


def test_waiting_jobs_survive_a_gateway_restart_and_are_forwarded_once_in_order(
        *, world: World, settings: Settings, fresh_database: Database,
        restore_cluster: Cluster, tmp_path: Path) -> None:
    before = GatewayProcess(settings, fresh_database, tmp_path / "before.log")
    after = GatewayProcess(settings, fresh_database, tmp_path / "after.log")
    with outage(restore_cluster):
        print()
        with before.running():
            kept, cancelled = submit_five_to_wait(before.client, world, settings)
        with after.running():
            forwarded_in_order(after.client, world, settings, cluster=restore_cluster,
                               database=fresh_database, kept=kept, cancelled=cancelled)
