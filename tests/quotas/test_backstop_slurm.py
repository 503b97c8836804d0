"""The backstop on the real test cluster: after `hpcgw admin quotas sync` sacctmgr shows the
limit the ledger wants, a job sent straight to sbatch past it never starts
(AssocGrpBillingMinutes) while one within it runs, and `quotas drift` reads Slurm back.

Works on a Slurm account of its own (hpcm_alpha associated to it), deleted at the end, so the
members' own accounts keep their limits."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import make_member, wide_cli_tables
from quota_helpers import give
from sqlalchemy import update
from testcluster_helpers import Cluster
from typer.testing import CliRunner

from consortium.models import ClusterIdentity
from gateway.cli.quotas import quotas_app
from gateway.db import Database
from quotas import backstop
from schedulers.slurm_ssh.accounting import SlurmAccountingSync

pytestmark = pytest.mark.slurm

CONFIG = """
[[clusters]]
name = "{name}"
backend = "slurm_ssh"
host = "{host}"
port = {port}
known_hosts = "{known_hosts}"
work_root = "{work_root}"
connect_timeout = 5.0
command_timeout = 30.0

[clusters.admin]
unix_user = "{admin_user}"
key_file = "{admin_key}"

[[clusters.partitions]]
name = "long"
max_time_minutes = 1440
max_cpus_per_job = 4
max_mem_mb_per_job = 4096
billing = {{ gpu = 0.0, cpu = 0.25, mem_gb = 0.0625 }}
"""


@pytest.fixture
def account(testcluster: Cluster) -> Iterator[str]:
    name = f"hpcgwq_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        sync = SlurmAccountingSync(testcluster.config())
        try:
            await sync.ensure_account(name, testcluster["ALPHA_USER"], "hpcgw quota test")
        finally:
            await sync.close()

    asyncio.run(create())
    yield name
    for _ in range(20):  # an association with jobs cannot be deleted
        testcluster.shell("ALPHA", f"scancel --account={name}")
        queued = testcluster.shell("ALPHA", f"squeue -h -A {name}")
        if queued.returncode == 0 and not queued.stdout.strip():
            break
        time.sleep(0.5)
    deleted = testcluster.shell("ADMIN", f"sacctmgr -i delete account {name}")
    left = testcluster.shell("ADMIN", f"sacctmgr -n -P show account where name={name} "
                                      "format=Account")
    assert not left.stdout.strip(), deleted.stdout + deleted.stderr


@pytest.fixture
def env(testcluster: Cluster, fresh_database: Database, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Database:
    config = tmp_path / "hpcgw.toml"
    config.write_text(CONFIG.format(
        name=testcluster["CLUSTER"], host=testcluster["SSH_HOST"], port=testcluster["SSH_PORT"],
        known_hosts=testcluster["KNOWN_HOSTS"], work_root=testcluster["WORK_ROOT"],
        admin_user=testcluster["ADMIN_USER"], admin_key=testcluster["ADMIN_KEY"]))
    monkeypatch.setenv("HPCGW_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("HPCGW_SECRET_KEY", secrets.token_urlsafe(40))
    monkeypatch.setenv("HPCGW_CONFIG", str(config))
    wide_cli_tables(monkeypatch, 250)
    return fresh_database


def sacctmgr_limit(cluster: Cluster, account: str) -> str:
    done = cluster.shell("ADMIN", f"sacctmgr -n -P show assoc where account={account} "
                                  "format=User,GrpTRESMins")
    assert done.returncode == 0, done.stderr
    [own] = [line for line in done.stdout.splitlines() if line.startswith("|")]
    return own.removeprefix("|")


def submit(cluster: Cluster, account: str, minutes: int) -> str:
    done = cluster.shell("ALPHA", f"sbatch --parsable --account={account} --partition=long "
                                  f"-c 4 --time={minutes} --wrap 'sleep 2'")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def state(cluster: Cluster, job_id: str) -> tuple[str, str]:
    done = cluster.shell("ALPHA", f"squeue -h -j {job_id} -o '%T|%r'")
    out = done.stdout.strip()
    if not out:  # gone from the queue: ended
        ended = cluster.shell("ADMIN", f"sacct -n -X -P -j {job_id} -o State").stdout.strip()
        return f"ENDED {ended}", done.stderr.strip()
    job_state, _, reason = out.partition("|")
    return job_state, reason


def _decided(job: tuple[str, str]) -> bool:
    """Scheduled, or waiting for something other than an association limit."""
    job_state, reason = job
    return job_state != "PENDING" or reason in ("Resources", "Priority")


def test_sync_pushes_the_ledger_limit_and_slurm_holds_back_a_bypassing_job(
        env: Database, testcluster: Cluster, account: str) -> None:
    with env.transaction() as session:
        member = make_member(session, cluster=testcluster["CLUSTER"])
        session.execute(update(ClusterIdentity).where(ClusterIdentity.member_id == member.id)
                        .values(slurm_account=account, unix_user=testcluster["ALPHA_USER"]))
        # 1 SU + 10 % margin; the cluster bills in milli-SU (slurm_billing_scale 1000), so
        # 1.1 SU = 1100 milli-SU for 60 minutes = 66 000 billing-minutes
        give(session, member, 1)
        allocation_member = member.id

    synced = CliRunner().invoke(quotas_app, ["sync"])
    assert synced.exit_code == 0, synced.output
    assert f"Slurm limit of {account} on {testcluster['CLUSTER']}: " \
           "GrpTRESMins=billing=66000" in synced.output
    assert sacctmgr_limit(testcluster, account) == "billing=66000"

    # 4 cores at 0.25 SU/h bill 1000 a minute: 120 minutes are past the limit, 1 is not
    past = submit(testcluster, account, 120)
    within = submit(testcluster, account, 1)
    deadline = time.monotonic() + 90
    seen: dict[str, tuple[str, str]] = {}
    while time.monotonic() < deadline:
        seen = {job: state(testcluster, job) for job in (past, within)}
        if seen[past][1].startswith("AssocGrp") and _decided(seen[within]):
            break
        time.sleep(1)
    assert seen[past] == ("PENDING", "AssocGrpBillingMinutes"), seen
    # the job within the limit runs, or waits only for the node (cores still held by jobs of
    # earlier tests): never for the limit
    assert _decided(seen[within]), seen
    assert state(testcluster, past)[0] == "PENDING"  # still held back: it never starts

    drift = CliRunner().invoke(quotas_app, ["drift"])
    assert account in drift.output
    lines = asyncio.run(_drift(env, testcluster))
    [line] = [x for x in lines if x.target.member_id == allocation_member]
    assert (line.error, line.slurm_limit_minutes, line.limit_drift) == (None, 66_000, 0)
    assert line.slurm_used_minutes is not None and line.ledger_charged_minutes == 0
    assert drift.exit_code == 0, drift.output


async def _drift(database: Database, cluster: Cluster) -> list[backstop.DriftLine]:
    from gateway.backstop import limit_sinks

    async with limit_sinks([cluster.config()]) as sinks:
        return await backstop.drift(database.transaction, sinks)
