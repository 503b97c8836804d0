"""A cluster configuration with footprint figures, and settled jobs, for the footprint tests."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

from factories import WEIGHTS
from sqlalchemy.orm import Session

from consortium.models import Project, User
from gateway.jobs.models import Job, JobState
from schedulers.config import ClusterConfig, Hardware, IdentityConfig, PartitionConfig

CLUSTER = "energy"


def partition(name: str = "debug", *, hardware: Hardware | None = None,
              cpus_per_core: int = 1) -> PartitionConfig:
    return PartitionConfig(name=name, max_time_minutes=2880, max_nodes=2, max_cpus_per_job=64,
                           max_gpus_per_job=8, max_mem_mb_per_job=512 * 1024, billing=WEIGHTS,
                           cpus_per_core=cpus_per_core, hardware=hardware)


NODE = Hardware(watts_per_core=12.0, watts_per_gb_mem=0.3725, gpu_model="a100-sxm4",
                cpus_per_node=4)


def cluster(*partitions: PartitionConfig, root: Path = Path("unused")) -> ClusterConfig:
    key = IdentityConfig(unix_user="hpcgw_admin", key_file=root / "key")
    return ClusterConfig(
        name=CLUSTER, backend="slurm_ssh", known_hosts=root / "known_hosts", admin=key,
        identities={"alpha": key}, pue=1.56, carbon_intensity_g_per_kwh=21.7,
        carbon_scope="direct", carbon_year=2024,
        partitions=list(partitions) or [partition(hardware=NODE)])


_jobs = itertools.count()


def settled_job(session: Session, project: Project, user: User, *, ended_at: datetime,
                source: str, kwh: float | None, charge_msu: int = 1000) -> Job:
    """A job as the tracker leaves it: ended, charged, its footprint labelled (21.7 g/kWh)."""
    n = next(_jobs)
    job = Job(public_id=f"job-fp-{n}", member_id=project.member_id, project_id=project.id,
              user_id=user.id, cluster=CLUSTER, name="train", state=JobState.completed,
              marker=f"hpcgw-fp-{n}", scheduler_id=str(1000 + n), partition="debug",
              resources={"gpus": 0, "ntasks": 1, "cpus_per_task": 1, "mem_mb": 100},
              script="#!/bin/bash\n", stdout_path="out", stderr_path="err",
              billing={"gpu": 1.0, "cpu": 0.25, "mem_gb": 0.0625}, quote_msu=charge_msu,
              charge_msu=charge_msu, refund_msu=0, ended_at=ended_at, energy_source=source,
              energy_kwh=kwh, carbon_g=None if kwh is None else kwh * 21.7)
    session.add(job)
    session.flush()
    return job
