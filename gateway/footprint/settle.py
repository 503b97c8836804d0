"""A job's and an array task's footprint, stored when the tracker settles them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gateway.footprint.model import Footprint, Run, Source, footprint, weakest
from gateway.jobs.models import Job, JobTask
from quotas.rates import Amounts
from schedulers.config import ClusterConfig
from schedulers.models import AccountingRecord


def _store(target: Job | JobTask, found: Footprint) -> None:
    target.energy_source = found.source.value
    target.energy_kwh, target.carbon_g = found.energy_kwh, found.carbon_g
    target.energy_figures = found.figures


def settle_job(job: Job, cluster: ClusterConfig, used: Amounts, elapsed: int) -> None:
    """A single job: what it was charged on (`used`, `elapsed`), and what Slurm measured
    (energy_joules_measured and alloc_nodes, set from its accounting record)."""
    _store(job, footprint(
        Run(cpus=used.cpus, gpus=used.gpus, mem_mb=used.mem_mb, seconds=elapsed,
            nodes=job.alloc_nodes or 1, measured_joules=job.energy_joules_measured),
        cluster.partition(job.partition), cluster))


def settle_task(job: Job, task: JobTask, cluster: ClusterConfig, used: Amounts, elapsed: int, *,
                record: AccountingRecord | None) -> None:
    """An array task that ended, with its accounting record (None: never recorded)."""
    measured = record.consumed_energy_joules if record is not None else None
    task.energy_joules_measured = measured
    _store(task, footprint(
        Run(cpus=used.cpus, gpus=used.gpus, mem_mb=used.mem_mb, seconds=elapsed,
            nodes=(record.node_count if record is not None else 0) or 1,
            measured_joules=measured),
        cluster.partition(job.partition), cluster))


def total_of_tasks(job: Job, tasks: Sequence[JobTask]) -> None:
    """An array's: its tasks' sums under its weakest task's label; no sum at all when a task
    has no figure (a partial sum would pass for the whole)."""
    sources = [Source(t.energy_source) if t.energy_source else Source.not_estimated
               for t in tasks]
    label = weakest(sources)
    counts = dict(sorted(Counter(s.value for s in sources).items()))
    job.energy_source = label.value
    job.energy_figures = {"tasks": counts}
    if label is Source.not_estimated:
        job.energy_kwh = job.carbon_g = None
        return
    job.energy_kwh = sum(t.energy_kwh or 0.0 for t in tasks)
    job.carbon_g = sum(t.carbon_g or 0.0 for t in tasks)
    measured = [t.energy_joules_measured for t in tasks if t.energy_joules_measured]
    job.energy_joules_measured = sum(measured) if measured else None  # Slurm's, as is
