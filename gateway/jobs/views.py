"""Jobs as the API shows them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.jobs.models import Job, JobEvent
from gateway.jobs.reasons import explain
from gateway.jobs.schemas import (
    Allocated,
    Energy,
    JobDetail,
    JobEventOut,
    JobOut,
    TemplateRef,
)


def event_out(event: JobEvent) -> JobEventOut:
    return JobEventOut(id=event.id, at=event.at, from_state=event.from_state,
                       to_state=event.to_state, detail=event.detail)


def job_out(job: Job) -> JobOut:
    return JobOut(**_fields(job))


def job_detail(job: Job, events: Sequence[JobEvent]) -> JobDetail:
    return JobDetail(**_fields(job), script=job.script, events=[event_out(e) for e in events])


def _fields(job: Job) -> dict[str, Any]:
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
        "cancel_requested": job.cancel_requested_at is not None,
        "allocated": Allocated(nodes=job.alloc_nodes, cpus=job.alloc_cpus, gpus=job.alloc_gpus,
                                 mem_mb=job.alloc_mem_mb, node_list=job.node_list),
        "energy": Energy(kwh=job.energy_kwh, source=job.energy_source, carbon_g=job.carbon_g),
    }
