"""Onboarding on the Slurm test cluster, through the API only: from an empty member (a Slurm
account the cluster has never seen, on a Unix user without an association to it) to its
first completed job, with no sacctmgr by hand; then suspension (the association blocked, a
queued job held), reactivation (released, it runs) and removal (blocked, Slurm's accounting
history kept). Slurm is read back as its admin with OpenSSH, not through the gateway's code.
Re-runnable: each run makes an account of its own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from e2e_helpers import PARTITION, until_ended, wait_for
from factories import auth_headers, make_user
from fastapi.testclient import TestClient

from consortium.base import utcnow
from consortium.models import Member, Role
from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm


@pytest.fixture
def client(settings: Settings, fresh_database: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings, database=fresh_database)) as client:
        yield client


def _associations(testcluster: Cluster, account: str) -> dict[str, tuple[str, str, str]]:
    """The account's associations: user ("" for the account's own) -> (GrpJobs,
    GrpSubmitJobs, GrpTRESMins)."""
    done = testcluster.shell("ADMIN", f"sacctmgr -n -P show assoc where account={account} "
                                      "format=User,GrpJobs,GrpSubmitJobs,GrpTRESMins")
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()]
    return {user: (jobs, submit, tres) for user, jobs, submit, tres in rows}


def _squeue_reason(testcluster: Cluster, job_id: str) -> str:
    done = testcluster.shell("ADMIN", f"squeue -h -j {int(job_id)} -o '%T|%r'")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _job(project: int, seconds: int, cpus: int) -> dict[str, Any]:
    return {"project": project, "name": "onboarding",
            "script": f"#!/bin/sh\nsleep {seconds}\necho done\n",
            "resources": {"partition": PARTITION, "cpus_per_task": cpus, "mem_mb": 256,
                          "time_limit_minutes": 5}}


def test_an_empty_member_onboarded_through_the_api_runs_its_jobs_and_is_suspended_in_slurm(
        client: TestClient, settings: Settings, fresh_database: Database,
        testcluster: Cluster) -> None:
    account = f"onb_{secrets.token_hex(4)}"
    unix_user = testcluster["ALPHA_USER"]
    cluster = testcluster["CLUSTER"]
    assert _associations(testcluster, account) == {}
    with fresh_database.transaction() as session:
        admin = make_user(session, email="ops@consortium.test", admin=True)
    as_admin = auth_headers(settings, admin)

    # the member, its allocation and project, then its identity: all through the API
    slug = f"m-{account.replace('_', '-')}"
    created = client.post("/api/v1/members", headers=as_admin, json={
        "slug": slug, "name": f"Onboarded {account}", "kind": "research"})
    assert created.status_code == 201, created.text
    now = utcnow()
    granted = client.post(f"/api/v1/members/{slug}/allocations", headers=as_admin, json={
        "amount_su": 50, "ends_at": (now + timedelta(days=30)).isoformat()})
    assert granted.status_code == 201, granted.text
    project = client.post(f"/api/v1/members/{slug}/projects", headers=as_admin, json={
        "slug": "first", "name": "First project", "domain": "research"})
    assert project.status_code == 201, project.text
    identity = client.post(f"/api/v1/members/{slug}/identities", headers=as_admin, json={
        "cluster": cluster, "unix_user": unix_user, "slurm_account": account,
        "ssh_key_ref": "alpha"})
    assert identity.status_code == 201, identity.text
    assert identity.json()["provisioning"] == "provisioned", identity.json()
    found = _associations(testcluster, account)
    # the user's association exists; the account's own carries the ledger's limit, unblocked
    assert set(found) == {"", unix_user}, found
    assert found[""][:2] == ("", "") and found[""][2].startswith("billing="), found

    with fresh_database.transaction() as session:
        member = session.query(Member).filter_by(slug=slug).one()
        researcher = make_user(session, email=f"r-{account}@member.test",
                               roles={member: Role.researcher})
    as_researcher = auth_headers(settings, researcher)
    first = client.post("/api/v1/jobs", headers=as_researcher,
                        json=_job(project.json()["id"], 1, 1))
    assert first.status_code == 201, first.text
    assert until_ended(client, as_researcher, first.json()["id"])["state"] == "completed"

    # the tracker recorded the cluster's health: no SSH behind this read
    view = client.get(f"/api/v1/clusters/{cluster}", headers=as_researcher).json()
    assert view["health"]["reachable"] and view["health"]["slurmctld"], view
    assert view["health"]["slurmdbd"], view

    # suspension: a job queued behind a running one is held, the association blocked
    running = client.post("/api/v1/jobs", headers=as_researcher,
                          json=_job(project.json()["id"], 20, 4)).json()
    queued = client.post("/api/v1/jobs", headers=as_researcher,
                         json=_job(project.json()["id"], 1, 4)).json()
    def pending() -> str | None:
        job = client.get(f"/api/v1/jobs/{queued['id']}", headers=as_researcher).json()
        return job["scheduler_id"] if job["state"] == "pending" else None
    queued_sid = wait_for("the second job queued in Slurm", pending, within=60)
    suspended = client.patch(f"/api/v1/members/{slug}", headers=as_admin,
                             json={"status": "suspended"})
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["identities"][0]["provisioning"] == "provisioned", suspended.json()
    assert _associations(testcluster, account)[""][:2] == ("0", "0")
    assert _squeue_reason(testcluster, queued_sid).startswith("PENDING|JobHeldAdmin")
    bypass = testcluster.shell("ALPHA", f"sbatch --account={account} -p {PARTITION} "
                                        "-t 1 --mem=64 -o /dev/null --wrap true")
    assert bypass.returncode != 0, bypass.stdout  # Slurm itself refuses the blocked account

    # reactivation: unblocked, the held job released and run
    reactivated = client.patch(f"/api/v1/members/{slug}", headers=as_admin,
                               json={"status": "active"})
    assert reactivated.status_code == 200, reactivated.text
    assert _associations(testcluster, account)[""][:2] == ("", "")
    assert until_ended(client, as_researcher, running["id"], within=120)["state"] == "completed"
    assert until_ended(client, as_researcher, queued["id"], within=120)["state"] == "completed"

    # removal: blocked, never deleted; Slurm's accounting still lists the member's jobs
    removed = client.delete(f"/api/v1/members/{slug}/identities/{cluster}", headers=as_admin)
    assert removed.status_code == 200, removed.text
    assert removed.json()["provisioning"] == "removed", removed.json()
    assert _associations(testcluster, account)[""][:2] == ("0", "0")
    sids = [client.get(f"/api/v1/jobs/{job}", headers=as_researcher).json()["scheduler_id"]
            for job in (first.json()["id"], running["id"], queued["id"])]
    history = testcluster.shell("ADMIN", f"sacct -a -n -X -P -j {','.join(sids)} "
                                         "-o JobID,Account,State")
    assert history.returncode == 0, history.stderr
    assert sorted(history.stdout.split()) == sorted(f"{sid}|{account}|COMPLETED"
                                                    for sid in sids), history.stdout
    refused = client.post("/api/v1/jobs", headers=as_researcher,
                          json=_job(project.json()["id"], 1, 1))
    assert refused.status_code == 409, refused.text
