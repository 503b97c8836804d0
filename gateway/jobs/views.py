"""Jobs as the API shows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.jobs.models import Job, JobEvent, JobTask
from gateway.jobs.reasons import explain
from gateway.jobs.schemas import (
    Allocated,
    Energy,
    JobDetail,
    JobEventOut,
    JobOut,
    TaskOut,
    TemplateRef,
)
from gateway.jobs.tasks import task_counts
from schedulers.base import task_path


def event_out(event: JobEvent) -> JobEventOut:
    return JobEventOut(id=event.id, at=event.at, from_state=event.from_state,
                       to_state=event.to_state, detail=event.detail)


def task_out(job: Job, task: JobTask) -> TaskOut:
    return TaskOut(
        task_id=task.task_id, scheduler_id=task.scheduler_id, state=task.state,
        exit_code=task.exit_code, signal=task.signal, elapsed_seconds=task.elapsed_seconds,
        charge_msu=task.charge_msu, refund_msu=task.refund_msu, started_at=task.started_at,
        ended_at=task.ended_at,
        allocated=Allocated(nodes=1 if task.node_list else None, cpus=task.alloc_cpus,
                            gpus=task.alloc_gpus, mem_mb=task.alloc_mem_mb,
                            node_list=task.node_list),
        stdout_path=task_path(job.stdout_path, task.task_id),
        stderr_path=task_path(job.stderr_path, task.task_id), energy=energy_of(task))


def energy_of(row: Job | JobTask) -> Energy:
    return Energy(kwh=row.energy_kwh, source=row.energy_source,
                  carbon_g=row.carbon_g, figures=row.energy_figures)


def job_out(job: Job, counts: Mapping[str, int]) -> JobOut:
    """`counts`: an array's tasks by state as stored (repository.task_counts)."""
    return JobOut(**_fields(job, counts))


def job_detail(job: Job, events: Sequence[JobEvent], tasks: Sequence[JobTask]) -> JobDetail:
    """`tasks`: an array's rows (repository.tasks_of)."""
    return JobDetail(**_fields(job, task_counts(t.state for t in tasks)), script=job.script,
                     events=[event_out(e) for e in events],
                     array_tasks=[task_out(job, t) for t in tasks])


def _tasks(job: Job, counts: Mapping[str, int]) -> dict[str, int] | None:
    """An array's tasks by state; before the tracker has seen them, all in the job's state
    (pending while it is on its way)."""
    if job.array is None:
        return None
    if counts:
        return dict(counts)
    return {(job.state.value if job.state.terminal else "pending"): job.task_count}


def _fields(job: Job, counts: Mapping[str, int]) -> dict[str, Any]:
    template = (TemplateRef(slug=job.template_slug, version=job.template_version)
                if job.template_slug is not None and job.template_version is not None else None)
    return {
        "id": job.public_id, "name": job.name, "state": job.state, "cluster": job.cluster,
        "member_id": job.member_id, "project_id": job.project_id, "user_id": job.user_id,
        "scheduler_id": job.scheduler_id, "marker": job.marker, "resources": job.resources,
        "template": template, "parameters": job.parameters, "environment": job.environment,
        "workdir": job.workdir, "stdout_path": job.stdout_path, "stderr_path": job.stderr_path,
        "quote_msu": job.quote_msu, "charge_msu": job.charge_msu, "refund_msu": job.refund_msu,
        "created_at": job.created_at, "submitted_at": job.submitted_at,
        "started_at": job.started_at, "ended_at": job.ended_at,
        "elapsed_seconds": job.elapsed_seconds, "exit_code": job.exit_code,
        "signal": job.signal, "pending_reason": job.pending_reason,
        "pending_reason_text": explain(job.pending_reason), "detail": job.detail,
        "wait_until": job.wait_until,
        "cancel_requested": job.cancel_requested_at is not None,
        "allocated": Allocated(nodes=job.alloc_nodes, cpus=job.alloc_cpus, gpus=job.alloc_gpus,
                                 mem_mb=job.alloc_mem_mb, node_list=job.node_list),
        "energy": energy_of(job),
        "array": job.array, "tasks": _tasks(job, counts),
    }
