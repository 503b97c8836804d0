"""Slurm accounting sync on the test cluster: accounts, associations and limits as sacctmgr
shows them. Each test works on an account of its own, deleted at the end."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from testcluster_helpers import Cluster

from schedulers.errors import SchedulerRejected
from schedulers.models import AssociationLimits, JobSpec, Resources
from schedulers.registry import build_accounting_sync
from schedulers.slurm_ssh.accounting import SlurmAccountingSync, diff
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler

pytestmark = [pytest.mark.slurm, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sync(testcluster: Cluster) -> AsyncIterator[SlurmAccountingSync]:
    s = SlurmAccountingSync(testcluster.config())
    yield s
    await s.close()


@pytest.fixture
def account(testcluster: Cluster) -> Iterator[str]:
    name = f"hpcgwt_{uuid.uuid4().hex[:10]}"
    yield name
    testcluster.shell("ADMIN", f"sacctmgr -i delete account {name}")


def shown(cluster: Cluster, account: str) -> list[str]:
    """`sacctmgr show assoc` of the account, as the admin reads it by hand."""
    done = cluster.shell("ADMIN", f"sacctmgr -n -P show assoc where account={account} "
                                  "format=Account,User,GrpTRESMins,GrpJobs,GrpSubmitJobs")
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.splitlines())


async def test_ensure_account_creates_the_account_and_association_once(
        sync: SlurmAccountingSync, testcluster: Cluster, account: str) -> None:
    user = testcluster["ALPHA_USER"]

    assert await sync.ensure_account(account, user, "Métropole test; $(touch x) 'quoted'")
    assert not await sync.ensure_account(account, user, "second call")

    assert shown(testcluster, account) == sorted([f"{account}||||", f"{account}|{user}|||"])
    described = testcluster.shell("ADMIN", f"sacctmgr -n -P show account {account} "
                                           "format=Description").stdout
    assert "$(touch x)" in described


async def test_limits_set_are_the_limits_sacctmgr_shows(
        sync: SlurmAccountingSync, testcluster: Cluster, account: str) -> None:
    await sync.ensure_account(account, testcluster["ALPHA_USER"], "limits")
    wanted = AssociationLimits(account=account, grp_billing_minutes=600, max_jobs=5,
                               max_submit_jobs=10)

    held = await sync.set_limits(wanted)

    assert held == wanted == await sync.read_limits(account)
    assert f"{account}||billing=600|5|10" in shown(testcluster, account)
    assert diff(wanted, held) == {}

    cleared = await sync.set_limits(AssociationLimits(account=account))

    assert cleared == AssociationLimits(account=account)
    assert f"{account}||||" in shown(testcluster, account)


async def test_blocking_stops_new_jobs_and_deletes_nothing(
        sync: SlurmAccountingSync, testcluster: Cluster, account: str) -> None:
    alpha = testcluster.identity("ALPHA")
    await sync.ensure_account(account, alpha.unix_user, "blocked")
    await sync.set_limits(AssociationLimits(account=account, grp_billing_minutes=600,
                                            max_jobs=5))

    held = await sync.block(account)

    assert held == AssociationLimits(account=account, grp_billing_minutes=600, blocked=True)
    assert shown(testcluster, account) == sorted([f"{account}||billing=600|0|0",
                                                  f"{account}|{alpha.unix_user}|||"])
    scheduler = SlurmSshScheduler(testcluster.config())
    spec = JobSpec(marker=f"bl-{uuid.uuid4().hex}", name="blocked", account=account,
                   script="#!/bin/bash\ntrue\n", stdout="blocked/out", stderr="blocked/err",
                   resources=Resources(partition=testcluster.partition, mem_mb=100,
                                       time_limit_minutes=1))
    try:
        deadline = time.monotonic() + 20  # slurmdbd pushes the change to slurmctld
        while True:
            try:
                job = await scheduler.submit(alpha, spec)
            except SchedulerRejected as exc:
                assert "Job violates accounting/QOS policy" in exc.message
                break
            await scheduler.cancel(alpha, job.scheduler_id)
            assert time.monotonic() < deadline, "a blocked account still takes jobs"
            await asyncio.sleep(0.5)
    finally:
        await scheduler.close()


async def test_reading_an_account_slurm_does_not_have_gives_none(
        sync: SlurmAccountingSync) -> None:
    assert await sync.read_limits(f"hpcgwt_missing_{uuid.uuid4().hex[:8]}") is None


async def test_names_sacctmgr_could_misread_are_refused(sync: SlurmAccountingSync,
                                                        testcluster: Cluster) -> None:
    for bad in ("Upper", "a b", "x;touch /tmp/y", "name=x", "-i"):
        with pytest.raises(SchedulerRejected):
            await sync.ensure_account(bad, testcluster["ALPHA_USER"], "x")
    with pytest.raises(SchedulerRejected):
        await sync.ensure_account("hpcgwt_ok", "bad user", "x")


async def test_registry_shares_the_schedulers_connections(testcluster: Cluster) -> None:
    scheduler = SlurmSshScheduler(testcluster.config())
    try:
        made = build_accounting_sync(testcluster.config(), scheduler)
        assert isinstance(made, SlurmAccountingSync) and made.scheduler is scheduler
    finally:
        await scheduler.close()
