"""What Slurm holds a job at, against what the gateway priced.

Every priced value goes to sbatch's command line, but sbatch runs in the member's login
environment on the cluster, which the member's own jobs can write (~/.bashrc exporting
SBATCH_EXCLUSIVE, a shell function named sbatch, ...), and an operator can `scontrol update` a
job. The tracker reads what Slurm holds each live job (an array's each task) at in the squeue it
makes anyway, and a job held wider than its quote is cancelled at once and ends `failed` (its
hold settles on what it ran, as any job's). The cluster's own hardening is in
docs/cluster-accounts.md; this check does not depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.jobs.arrays import parse_array
from schedulers.models import UNLIMITED_MINUTES, JobStatus

# Slurm prints memory TRES with two decimals of its largest unit (`1.50G`): read back, that
# can exceed the exact request by up to 1 %
MEM_TOLERANCE = 1.01


def held_statuses(scheduler_id: str, array: str | None,
                  statuses: Mapping[str, JobStatus]) -> list[JobStatus]:
    """The squeue lines of one job: its own, and any task of its id (an array's tasks; for
    a single job, tasks it should not have)."""
    prefix = f"{scheduler_id}_"
    own = [statuses[scheduler_id]] if scheduler_id in statuses else []
    return own + [s for key, s in statuses.items() if key.startswith(prefix)]


def excess(resources: Mapping[str, Any], scheduler_id: str, held: list[JobStatus], *,
           cpus_per_core: int = 1) -> list[str]:
    """Each way Slurm holds the job (each task) wider than `resources` (a job row's, as
    priced), e.g. `cpus 4 > 1`; empty when it holds no more, or says nothing (None fields).
    CPUs count in whole cores of `cpus_per_core` threads, as the partition allocates them."""
    nodes = resources["nodes"]
    cpus = -(-resources["ntasks"] * resources["cpus_per_task"] // cpus_per_core) * cpus_per_core
    mem = -(-resources["mem_mb"] // nodes) * nodes  # what sbatch got: --mem per node
    minutes = resources["time_limit_minutes"]
    found: dict[str, str] = {}
    for s in held:
        if s.cpus is not None and s.cpus > cpus:
            found.setdefault("cpus", f"cpus {s.cpus} > {cpus}")
        if s.mem_mb is not None and s.mem_mb > mem * MEM_TOLERANCE:
            found.setdefault("mem", f"memory {s.mem_mb} MB > {mem} MB")
        if s.nodes is not None and s.nodes > nodes:
            found.setdefault("nodes", f"nodes {s.nodes} > {nodes}")
        if s.gpus is not None and s.gpus > resources["gpus"]:
            found.setdefault("gpus", f"gpus {s.gpus} > {resources['gpus']}")
        if s.time_limit_minutes is not None and s.time_limit_minutes > minutes:
            limit = ("unlimited" if s.time_limit_minutes == UNLIMITED_MINUTES
                     else f"{s.time_limit_minutes} min")
            found.setdefault("time", f"time limit {limit} > {minutes} min")
        if s.exclusive:
            found.setdefault("exclusive", "whole nodes (exclusive) where none was asked")
    priced = set(parse_array(resources["array"]).task_ids) if resources.get("array") else set()
    tasks = {int(s.scheduler_id.partition("_")[2]) for s in held
             if s.scheduler_id != scheduler_id}
    if tasks - priced:
        found["array"] = f"array tasks {len(tasks | priced)} > {max(1, len(priced))}"
    return list(found.values())
