"""Tables of the job domain: jobs, their state history and (arrays) their tasks, templates and
their versions, idempotency records of submissions, and the tracker's per-cluster lease."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consortium.base import Base, BigIntPK, UTCDateTime, enum_column, utcnow


class JobState(StrEnum):
    """PRODUCT.md's job states. `unknown`: the script may have reached the cluster, no answer
    came back; the tracker settles it by the job's marker, never by submitting again."""

    accepted = "accepted"
    submitting = "submitting"
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    timeout = "timeout"
    out_of_memory = "out_of_memory"
    node_fail = "node_fail"
    submit_failed = "submit_failed"
    unknown = "unknown"
    # accepted while its cluster could not be reached (or was in a maintenance window): not
    # tried against Slurm yet; the tracker forwards it once the cluster answers (migration 0007)
    waiting = "waiting"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({
    JobState.completed, JobState.failed, JobState.cancelled, JobState.timeout,
    JobState.out_of_memory, JobState.node_fail, JobState.submit_failed,
})
# on the cluster with a known id: the tracker reads them with squeue/sacct
QUEUED_STATES = frozenset({JobState.pending, JobState.running})
# the cluster may or may not have them: settled by marker
UNSETTLED_STATES = frozenset({JobState.accepted, JobState.submitting, JobState.unknown})
# held, not sent: the tracker forwards them (gateway/jobs/waiting.py)
ACTIVE_STATES = QUEUED_STATES | UNSETTLED_STATES | {JobState.waiting}


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_member_id_id", "member_id", "id"),
        Index("ix_jobs_member_id_state", "member_id", "state"),
        Index("ix_jobs_project_id_id", "project_id", "id"),
        Index("ix_jobs_user_id_id", "user_id", "id"),
        Index("ix_jobs_cluster_state", "cluster", "state"),
        Index("ix_jobs_cluster_scheduler_id", "cluster", "scheduler_id"),
        Index("ix_jobs_ended_at", "ended_at"),  # the transparency report's period
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="RESTRICT"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    cluster: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[JobState] = mapped_column(enum_column(JobState, "job_state"),
                                            default=JobState.accepted)
    # goes to Slurm's --comment: how a job whose submission went unanswered is found again
    marker: Mapped[str] = mapped_column(String(120), unique=True)
    scheduler_id: Mapped[str | None] = mapped_column(String(64))
    # how many jobs Slurm runs for it: an array's tasks (job_tasks), else 1; the member's cap
    # on active jobs sums it
    task_count: Mapped[int] = mapped_column(Integer, server_default="1")

    # what was asked
    partition: Mapped[str] = mapped_column(String(64))
    resources: Mapped[dict[str, Any]] = mapped_column(JSON)
    script: Mapped[str] = mapped_column(Text)  # as submitted (a template rendered)
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("job_templates.id", ondelete="RESTRICT"))
    template_slug: Mapped[str | None] = mapped_column(String(64))
    template_version: Mapped[int | None] = mapped_column(Integer)
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    environment: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    workdir: Mapped[str] = mapped_column(String(500), default="")
    stdout_path: Mapped[str] = mapped_column(String(600))
    stderr_path: Mapped[str] = mapped_column(String(600))

    # money, in integer milli-SU; the partition's billing weights when it was quoted, so that
    # the charge is priced like the quote even if the configuration changes meanwhile
    billing: Mapped[dict[str, float]] = mapped_column(JSON)
    quote_msu: Mapped[int] = mapped_column(BigInteger)
    charge_msu: Mapped[int | None] = mapped_column(BigInteger)
    refund_msu: Mapped[int | None] = mapped_column(BigInteger)

    # timings
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # +1 on every change of the row or a new event of the job, by database triggers (migration
    # 0005), whoever writes: the read path's cached answers compare it. Never written here.
    revision: Mapped[int] = mapped_column(BigInteger, server_default="0")
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # a `waiting` job still waiting then fails (submit_failed, hold released)
    wait_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # how it went
    pending_reason: Mapped[str | None] = mapped_column(String(64))
    raw_state: Mapped[str | None] = mapped_column(String(64))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)  # Slurm's refusal, why it was lost...
    elapsed_seconds: Mapped[int | None] = mapped_column(Integer)
    alloc_nodes: Mapped[int | None] = mapped_column(Integer)
    alloc_cpus: Mapped[int | None] = mapped_column(Integer)
    alloc_gpus: Mapped[int | None] = mapped_column(Integer)
    alloc_mem_mb: Mapped[int | None] = mapped_column(Integer)
    node_list: Mapped[str | None] = mapped_column(String(500))

    # sustainability, set at settlement (gateway.footprint): measured when Slurm's
    # ConsumedEnergy exists and the job had its nodes to itself, else estimated
    energy_joules_measured: Mapped[float | None] = mapped_column(Float)
    energy_kwh: Mapped[float | None] = mapped_column(Float)
    # measured | estimated | not_estimated
    energy_source: Mapped[str | None] = mapped_column(String(16))
    carbon_g: Mapped[float | None] = mapped_column(Float)
    energy_figures: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the inputs used

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", lazy="raise", order_by="JobEvent.id")

    @property
    def array(self) -> str | None:
        """The array's canonical spec (`0-5%2`), None for a single job."""
        spec = self.resources.get("array")
        return spec if isinstance(spec, str) else None


class JobEvent(Base):
    """One state change of a job, append-only; the id orders them (SSE's Last-Event-ID)."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_state: Mapped[JobState | None] = mapped_column(enum_column(JobState, "from_state"))
    to_state: Mapped[JobState] = mapped_column(enum_column(JobState, "to_state"))
    detail: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events", lazy="raise")


class JobTask(Base):
    """One task of a job array as the tracker followed it, from its first sight on the cluster
    to its settlement (charge and refund set once it has ended). Any change bumps the job's
    revision (triggers of migration 0006), like a new event."""

    __tablename__ = "job_tasks"
    __table_args__ = (UniqueConstraint("job_id", "task_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(Integer)  # SLURM_ARRAY_TASK_ID
    scheduler_id: Mapped[str] = mapped_column(String(64))  # `123_4`
    state: Mapped[JobState] = mapped_column(enum_column(JobState, "task_state"),
                                            default=JobState.pending)
    raw_state: Mapped[str | None] = mapped_column(String(64))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    elapsed_seconds: Mapped[int | None] = mapped_column(Integer)
    alloc_cpus: Mapped[int | None] = mapped_column(Integer)
    alloc_gpus: Mapped[int | None] = mapped_column(Integer)
    alloc_mem_mb: Mapped[int | None] = mapped_column(Integer)
    node_list: Mapped[str | None] = mapped_column(String(500))
    charge_msu: Mapped[int | None] = mapped_column(BigInteger)
    refund_msu: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # as the job's (gateway.footprint), per task
    energy_joules_measured: Mapped[float | None] = mapped_column(Float)
    energy_kwh: Mapped[float | None] = mapped_column(Float)
    energy_source: Mapped[str | None] = mapped_column(String(16))
    carbon_g: Mapped[float | None] = mapped_column(Float)
    energy_figures: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class JobTemplate(Base):
    """An admin-approved job script; each change is a new JobTemplateVersion."""

    __tablename__ = "job_templates"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    versions: Mapped[list[JobTemplateVersion]] = relationship(
        back_populates="template", lazy="raise", order_by="JobTemplateVersion.version")


class JobTemplateVersion(Base):
    __tablename__ = "job_template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("job_templates.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text)  # Jinja source, rendered in a sandbox
    parameters: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # ParameterSpec dumps
    files: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # shipped beside the script
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    template: Mapped[JobTemplate] = relationship(back_populates="versions", lazy="raise")


class IdempotencyState(StrEnum):
    in_flight = "in_flight"
    done = "done"


class IdempotencyRecord(Base):
    """An Idempotency-Key of a user (IETF httpapi-idempotency-key-header): the request's
    fingerprint and, once done, the response replayed to every retry until it expires."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[IdempotencyState] = mapped_column(
        enum_column(IdempotencyState, "idempotency_state"), default=IdempotencyState.in_flight)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class TrackerLease(Base):
    """Who tracks a cluster: one row per cluster, taken over only once it has expired."""

    __tablename__ = "tracker_leases"

    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
