"""A job Slurm holds wider than the gateway priced, on the real test cluster, through the API.

Two defences, each checked on its own (docs/cluster-accounts.md): the tracker cancels a job an
admin widened behind the gateway's back (`scontrol update`), and the cluster's accounts are
hardened so that a member's job writing its own ~/.bashrc, ~/.profile and ~/.ssh files leaves
the gateway's next submission exactly as quoted."""

from __future__ import annotations

import asyncio
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from e2e_helpers import World, script_job, slurm_accounting, until_ended, wait_for
from factories import auth_headers
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from consortium.models import AuditEvent, ClusterIdentity
from gateway.db import Database
from gateway.settings import Settings
from schedulers.slurm_ssh.accounting import SlurmAccountingSync

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"
WIDENED = "Slurm held more than the gateway priced"
# what a member's job may write in its home to act on the gateway's next login
DOTFILES = (".bashrc", ".profile", ".ssh/authorized_keys", ".ssh/rc", ".ssh/environment")
HOSTILE_RC = """\
export SBATCH_EXCLUSIVE=1 SBATCH_GPUS_PER_NODE=4
sbatch() { command sbatch "$@" --cpus-per-task=4 --exclusive; }
"""


def until_state(client: TestClient, auth: dict[str, str], public_id: str,
                state: str) -> dict[str, Any]:
    """The job once the gateway has it in `state`, with its Slurm id."""
    def reached() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"{JOBS}/{public_id}", headers=auth).json()
        return job if job["state"] == state and job["scheduler_id"] else None
    found: dict[str, Any] = wait_for(f"job {public_id} {state}", reached, within=30)
    return found


def slurm_state(testcluster: Cluster, job_id: str) -> str:
    done = testcluster.shell("ADMIN", f"sacct -X -n -P -j {int(job_id)} -o State")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def widened_audits(database: Database, public_id: str) -> list[AuditEvent]:
    with database.transaction(write=False) as session:
        return list(session.scalars(select(AuditEvent).where(
            AuditEvent.target_id == public_id, AuditEvent.action == "job.widened_cancel")))


@pytest.fixture
def blocked_account(testcluster: Cluster, fresh_database: Database,
                    world: World) -> Iterator[str]:
    """A Slurm account of its own for alpha (GrpJobs=0: its jobs wait, never start), made
    alpha's account on the cluster for this test; deleted at the end."""
    name = f"hpcgww_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        sync = SlurmAccountingSync(testcluster.config())
        try:
            await sync.ensure_account(name, testcluster["ALPHA_USER"], "hpcgw widening test")
        finally:
            await sync.close()

    asyncio.run(create())
    blocked = testcluster.shell("ADMIN", f"sacctmgr -i modify account where name={name} "
                                         "set GrpJobs=0")
    assert blocked.returncode == 0, blocked.stdout + blocked.stderr
    with fresh_database.transaction() as session:
        session.execute(update(ClusterIdentity).where(ClusterIdentity.member_id == world.alpha.id)
                        .values(slurm_account=name))
    yield name
    for _ in range(20):  # an association with jobs cannot be deleted
        testcluster.shell("ADMIN", f"scancel --account={name}")
        queued = testcluster.shell("ADMIN", f"squeue -h -A {name}")
        if queued.returncode == 0 and not queued.stdout.strip():
            break
        time.sleep(0.5)
    testcluster.shell("ADMIN", f"sacctmgr -i delete account {name}")


def test_a_pending_job_widened_by_the_admin_is_cancelled_and_ends_failed(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster, blocked_account: str) -> None:
    alice = auth_headers(settings, world.alice)
    answer = gateway.post(JOBS, headers=alice, json=script_job(
        world.alpha_project, "#!/bin/bash\nsleep 600\n", name="widened-pending"))
    assert answer.status_code == 201, answer.text
    public_id = answer.json()["id"]
    slurm_id = until_state(gateway, alice, public_id, "pending")["scheduler_id"]
    widen = testcluster.shell("ADMIN", f"scontrol update JobId={slurm_id} NumCPUs=4")
    assert widen.returncode == 0, widen.stderr

    ended = until_ended(gateway, alice, public_id, within=60)

    assert ended["state"] == "failed"
    assert ended["detail"] == f"{WIDENED}: cpus 4 > 1; cancelled"
    assert ended["charge_msu"] == 0  # it never ran
    assert slurm_state(testcluster, slurm_id).startswith("CANCELLED")
    (audit,) = widened_audits(fresh_database, public_id)
    assert audit.details == {"scheduler_id": slurm_id, "excess": ["cpus 4 > 1"]}


def test_a_running_job_given_a_longer_time_limit_is_cancelled_and_charged_what_it_ran(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster) -> None:
    alice = auth_headers(settings, world.alice)
    answer = gateway.post(JOBS, headers=alice, json=script_job(
        world.alpha_project, "#!/bin/bash\nsleep 600\n", name="widened-running"))
    assert answer.status_code == 201, answer.text
    public_id, quote = answer.json()["id"], answer.json()["quote_msu"]
    slurm_id = until_state(gateway, alice, public_id, "running")["scheduler_id"]
    widen = testcluster.shell("ADMIN", f"scontrol update JobId={slurm_id} TimeLimit=30")
    assert widen.returncode == 0, widen.stderr

    ended = until_ended(gateway, alice, public_id, within=60)

    assert ended["state"] == "failed"
    assert ended["detail"] == f"{WIDENED}: time limit 30 min > 5 min; cancelled"
    assert 0 <= ended["charge_msu"] <= quote
    used = slurm_accounting(testcluster, slurm_id)
    assert used.state.startswith("CANCELLED") and used.alloc_tres["cpu"] == "1"
    assert len(widened_audits(fresh_database, public_id)) == 1


@pytest.fixture
def alpha_dotfiles(testcluster: Cluster) -> Iterator[None]:
    """alpha's dotfiles kept aside and put back whatever the test wrote (the test cluster's
    accounts are shared by the tests)."""
    quoted = " ".join(shlex.quote(f) for f in DOTFILES)
    saved = testcluster.shell("ALPHA", f"cd && for f in {quoted}; do [ -e \"$f\" ] && "
                                       "cp -p \"$f\" \"$f.hpcgw-saved\"; done; true")
    assert saved.returncode == 0, saved.stderr
    try:
        yield
    finally:
        restored = testcluster.shell(
            "ALPHA", f"cd && for f in {quoted}; do if [ -e \"$f.hpcgw-saved\" ]; then "
                     "mv -f \"$f.hpcgw-saved\" \"$f\"; else rm -f \"$f\"; fi; done")
        assert restored.returncode == 0, restored.stderr


def test_a_member_job_writing_its_dotfiles_cannot_widen_the_next_submission(
        *, gateway: TestClient, world: World, settings: Settings, testcluster: Cluster,
        alpha_dotfiles: None) -> None:
    alice = auth_headers(settings, world.alice)
    user = testcluster["ALPHA_USER"]
    keys = Path(testcluster["STATE_DIR"]) / "authorized_keys" / user
    key_before = keys.read_text()
    rogue = Path(testcluster["ADMIN_KEY"] + ".pub").read_text().strip()
    forced = f'command="sbatch --exclusive",environment="SBATCH_EXCLUSIVE=1" {rogue}'
    hostile = (
        "#!/bin/bash\ncd\nmkdir -p .ssh\n"
        f"printf '%s' {shlex.quote(HOSTILE_RC)} | tee .bashrc.new > .profile\n"
        "cat .bashrc >> .bashrc.new 2>/dev/null; mv .bashrc.new .bashrc\n"
        "echo SBATCH_EXCLUSIVE=1 >> .ssh/environment\n"
        "echo 'export SBATCH_EXCLUSIVE=1' > .ssh/rc\n"
        f"echo {shlex.quote(forced)} >> .ssh/authorized_keys\n"
        "echo written\n")
    first = gateway.post(JOBS, headers=alice, json=script_job(
        world.alpha_project, hostile, name="dotfiles"))
    assert first.status_code == 201, first.text
    assert until_ended(gateway, alice, first.json()["id"])["state"] == "completed"
    # the files are there, and a login as alpha (as the gateway's) reads none of them
    seen = testcluster.shell("ALPHA", "grep -c SBATCH_EXCLUSIVE ~/.bashrc ~/.profile; "
                                      "echo \"exclusive=${SBATCH_EXCLUSIVE-}\"; command -v sbatch")
    assert "/.bashrc:1" in seen.stdout and "/.profile:1" in seen.stdout, seen.stdout
    assert "exclusive=\n" in seen.stdout and seen.stdout.strip().endswith("/sbatch"), seen.stdout

    second = gateway.post(JOBS, headers=alice, json=script_job(
        world.alpha_project, "#!/bin/bash\nsleep 1\n", name="after-dotfiles"))
    assert second.status_code == 201, second.text
    ended = until_ended(gateway, alice, second.json()["id"])

    assert (ended["state"], ended["detail"]) == ("completed", None)
    tres = slurm_accounting(testcluster, ended["scheduler_id"]).alloc_tres
    assert {k: v for k, v in tres.items() if k != "billing"} == {
        "cpu": "1", "mem": "256M", "node": "1"}, tres
    assert keys.read_text() == key_before  # root's, untouched by the job
