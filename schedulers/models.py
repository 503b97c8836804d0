"""The scheduler layer's own types: what the gateway asks for and what comes back."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JobState(StrEnum):
    """Where a job is on the cluster, mapped onto PRODUCT.md's states."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    timeout = "timeout"
    out_of_memory = "out_of_memory"
    node_fail = "node_fail"

    @property
    def terminal(self) -> bool:
        return self not in (JobState.pending, JobState.running)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Identity(_Frozen):
    """Who a command runs as: a member's Unix account (or the admin one) and its key."""

    name: str
    unix_user: str
    key_file: str
    work_root: str  # absolute path of the member's work directory on the cluster


class Resources(_Frozen):
    partition: str
    nodes: int = Field(1, ge=1)
    ntasks: int = Field(1, ge=1)
    cpus_per_task: int = Field(1, ge=1)
    gpus: int = Field(0, ge=0)
    mem_mb: int = Field(ge=1)
    time_limit_minutes: int = Field(ge=1)
    array: str | None = None  # Slurm's --array spec, canonical (gateway.jobs.arrays)

    @property
    def cpus(self) -> int:
        return self.ntasks * self.cpus_per_task

    @property
    def mem_mb_per_node(self) -> int:
        """Slurm's `--mem` is per node, `mem_mb` the whole job's (a multiple of the nodes when
        the gateway resolved it): rounded up, it never gives less than asked."""
        return -(-self.mem_mb // self.nodes)


class JobSpec(_Frozen):
    """A job to submit. Paths are relative to the identity's work root."""

    marker: str = Field(pattern=r"^[A-Za-z0-9:_.-]{8,100}$")  # goes to --comment, never reused
    name: str = Field(min_length=1, max_length=200)
    script: str = Field(min_length=1)
    account: str | None = None  # Slurm account; the association default when None
    resources: Resources
    environment: dict[str, str] = {}
    workdir: str = ""
    stdout: str
    stderr: str


class Submitted(_Frozen):
    scheduler_id: str


class FoundJob(_Frozen):
    """A job found by the gateway's marker, when the answer to its submission was lost."""

    scheduler_id: str
    submit: datetime | None = None  # Slurm's submit time, where the scheduler reports it


# Slurm's INFINITE time limit ("UNLIMITED"), in minutes
UNLIMITED_MINUTES = 0xFFFFFFFF


class JobStatus(_Frozen):
    """A live job (an array's task) as the scheduler holds it. The sizes are what it holds
    now: requested while pending, allocated once running; None where the backend does not
    say (then nothing is compared with the job's quote)."""

    scheduler_id: str
    state: JobState
    raw_state: str
    reason: str | None = None  # Slurm's reason code while pending (e.g. "Resources")
    cpus: int | None = None
    mem_mb: int | None = None  # the whole job's (task's)
    nodes: int | None = None
    gpus: int | None = None
    time_limit_minutes: int | None = None  # UNLIMITED_MINUTES for no limit
    exclusive: bool | None = None  # whole nodes, not shared with other jobs


class AccountingRecord(_Frozen):
    scheduler_id: str
    state: JobState
    raw_state: str
    exit_code: int | None = None
    signal: int | None = None
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    elapsed_seconds: int = 0
    alloc_cpus: int = 0
    alloc_gpus: int = 0
    alloc_mem_mb: int = 0
    nodes: str = ""
    node_count: int = 0
    consumed_energy_joules: float | None = None  # None where Slurm measured nothing
    account: str | None = None
    user: str | None = None


class OutputChunk(_Frozen):
    data: bytes
    offset: int
    next_offset: int
    size: int  # the file's size when read


class FileEntry(_Frozen):
    """One entry of a directory listing: a regular file or a directory."""

    name: str
    type: Literal["file", "dir"]
    size: int  # bytes (a directory's as its file system reports it)
    modified: datetime | None = None


class Health(_Frozen):
    cluster: str
    ok: bool
    detail: str
    latency_ms: float


class ClusterStatus(_Frozen):
    """The cluster's daemons as one probe found them; None: not checked (unreachable, or the
    backend has no such daemon)."""

    cluster: str
    reachable: bool  # the gateway got an answer (SSH and a command ran)
    slurmctld: bool | None
    slurmdbd: bool | None
    detail: str


class AssociationLimits(_Frozen):
    """What the gateway keeps in Slurm's accounting for a member's account."""

    account: str
    grp_billing_minutes: int | None = None  # GrpTRESMins=billing=N; None = no limit
    max_jobs: int | None = None  # GrpJobs
    max_submit_jobs: int | None = None  # GrpSubmitJobs
    blocked: bool = False  # GrpJobs=0 + GrpSubmitJobs=0: nothing new starts, nothing deleted
