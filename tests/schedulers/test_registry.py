"""The registry picks each cluster's backend from its configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import WEIGHTS

from schedulers.base import StagesSubmissions
from schedulers.config import ClusterConfig, IdentityConfig, PartitionConfig
from schedulers.local import LocalScheduler
from schedulers.registry import build_accounting_sync, build_scheduler, check_cluster
from schedulers.slurm_ssh.accounting import SlurmAccountingSync
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler

PARTITIONS = [PartitionConfig(name="debug", max_time_minutes=60, max_cpus_per_job=2,
                              max_mem_mb_per_job=1024, billing=WEIGHTS)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def local(tmp_path: Path) -> ClusterConfig:
    return ClusterConfig(name="laptop", backend="local", local_root=tmp_path,
                         partitions=PARTITIONS)


def slurm(tmp_path: Path) -> ClusterConfig:
    key = IdentityConfig(unix_user="gw", key_file=tmp_path / "key")
    return ClusterConfig(name="far", backend="slurm_ssh", host="127.0.0.1", port=1,
                         known_hosts=tmp_path / "known_hosts", admin=key,
                         partitions=PARTITIONS, connect_timeout=1)


@pytest.mark.anyio
async def test_each_backend_comes_from_its_configuration(tmp_path: Path) -> None:
    laptop = build_scheduler(local(tmp_path))
    far = build_scheduler(slurm(tmp_path))
    try:
        assert isinstance(laptop, LocalScheduler)
        assert isinstance(far, SlurmSshScheduler)
        # staging a submission is an optional capability, slurm_ssh's alone
        assert isinstance(far, StagesSubmissions) and not isinstance(laptop, StagesSubmissions)
        assert build_accounting_sync(local(tmp_path)) is None
        shared = build_accounting_sync(slurm(tmp_path), far)
        assert isinstance(shared, SlurmAccountingSync) and shared.scheduler is far
    finally:
        await laptop.close()
        await far.close()


@pytest.mark.anyio
async def test_cluster_check_reports_health_and_never_raises(tmp_path: Path) -> None:
    assert (await check_cluster(local(tmp_path))).ok

    unreachable = await check_cluster(slurm(tmp_path))

    assert not unreachable.ok and unreachable.cluster == "far"
