"""The interface every backend implements. All methods are coroutines: a backend that blocks
(paramiko, pyslurm) runs its calls in worker threads, never on the event loop."""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from schedulers.config import ClusterConfig
from schedulers.errors import SchedulerRejected
from schedulers.models import (
    AccountingRecord,
    AssociationLimits,
    ClusterStatus,
    FileEntry,
    FoundJob,
    Health,
    Identity,
    JobSpec,
    JobStatus,
    OutputChunk,
    Submitted,
)

# Slurm job names carry this prefix and the gateway's marker goes to --comment.
JOB_NAME_PREFIX = "hpcgw-"


def task_path(path: str, task: str | int) -> str:
    """Where a job array's task writes what the job's spec names `path`: `_<task>` before the
    extension (`out/hpcgw-ab12.out` -> `out/hpcgw-ab12_4.out`; Slurm's pattern is `_%a`)."""
    root, ext = posixpath.splitext(path)
    return f"{root}_{task}{ext}"


class Scheduler(ABC):
    # runs job arrays (JobSpec.resources.array); a backend that does not refuses them up front
    supports_arrays = False
    # holds and releases queued jobs (a suspended member's); the others refuse both
    supports_hold = False

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted: ...

    @abstractmethod
    async def states(self, scheduler_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of live jobs, in one remote command. Jobs the queue no longer knows are absent:
        read them with `accounting`. A job array's tasks come one per task, keyed
        `<array id>_<task id>` (tasks still pending together too); the array's own id is
        absent."""

    @abstractmethod
    async def accounting(self, scheduler_ids: Sequence[str]) -> dict[str, AccountingRecord]:
        """Accounting records, in one remote command. Absent = not recorded yet. Arrays as in
        `states`: one record per task, keyed `<array id>_<task id>`."""

    @abstractmethod
    async def cancel(self, identity: Identity, scheduler_id: str) -> None: ...

    @abstractmethod
    async def find_by_marker(self, identity: Identity, marker: str) -> FoundJob | None:
        """The job submitted with this marker, if Slurm knows one."""

    @abstractmethod
    async def read_output(self, identity: Identity, path: str, offset: int,
                          limit: int) -> OutputChunk: ...

    @abstractmethod
    async def put_file(self, identity: Identity, path: str, data: bytes) -> None: ...

    @abstractmethod
    async def get_file(self, identity: Identity, path: str, limit: int) -> bytes:
        """The whole file (SchedulerRejected beyond `limit` bytes; IsADirectory for a
        directory)."""

    @abstractmethod
    async def list_files(self, identity: Identity, path: str) -> list[FileEntry]:
        """The regular files and directories in directory `path` (relative to the work root,
        "" for the root itself), by name; symbolic links and special files are left out.
        NotADirectory for a file, SchedulerRejected for a path that does not exist."""

    @abstractmethod
    async def health(self) -> Health: ...

    async def status(self) -> ClusterStatus:
        """The daemons the backend depends on; never raises (an error is a status)."""
        found = await self.health()
        return ClusterStatus(cluster=self.name, reachable=found.ok, slurmctld=None,
                             slurmdbd=None, detail=found.detail)

    def accounting_sync(self) -> AccountingSync | None:
        """sacctmgr through this scheduler's connections; None: the backend has no Slurm
        accounts to keep (the local one; a pyslurm gateway is an unprivileged user)."""
        return None

    async def hold(self, scheduler_ids: Sequence[str]) -> None:
        """Keep queued jobs from starting until `release` (a suspended member's)."""
        raise SchedulerRejected(f"the {self.config.backend} backend cannot hold jobs",
                                cluster=self.name)

    async def release(self, scheduler_ids: Sequence[str]) -> None:
        raise SchedulerRejected(f"the {self.config.backend} backend cannot release jobs",
                                cluster=self.name)

    async def close(self) -> None:  # noqa: B027 - backends without resources need nothing
        """Release connections and threads."""


class Staged(Protocol):
    """A submission prepared ahead of its job's commit (`StagesSubmissions.stage`)."""

    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted:
        """Submit `spec`, using what was prepared when it still fits (the scheduler's own
        submit otherwise)."""
        ...

    def discard(self) -> None:
        """Give up what was prepared (idempotent; harmless after submit)."""


@runtime_checkable
class StagesSubmissions(Protocol):
    """An optional capability of a Scheduler: starting a submission before its job is
    committed (slurm_ssh starts `sbatch` over SSH, waiting for its script). It exists for the
    submit latency floor of bench/jobs.py: the commit and the remote command's start overlap.
    Backends without it are submitted with `Scheduler.submit` after the commit."""

    def stage(self, identity: Identity, spec: JobSpec) -> Staged | None:
        """Start what a submission of `spec` (script and environment aside) can do, without
        waiting for it; None when nothing can be staged. Nothing may reach the scheduler
        before `Staged.submit`; a staged submission discarded, or lost with this process,
        submits nothing."""
        ...


class AccountingSync(ABC):
    """Keeps members' accounts and limits in Slurm's accounting (sacctmgr), idempotently."""

    @abstractmethod
    async def ensure_account(self, account: str, unix_user: str, description: str) -> bool:
        """Create the account and the user's association when missing; True if anything changed."""

    @abstractmethod
    async def read_limits(self, account: str) -> AssociationLimits | None: ...

    @abstractmethod
    async def set_limits(self, limits: AssociationLimits) -> AssociationLimits:
        """Apply, read back and return what Slurm now holds."""

    @abstractmethod
    async def read_usage(self, account: str) -> int | None:
        """The billing-minutes Slurm has counted for the account; None when it counts none."""

    async def close(self) -> None:  # noqa: B027 - a sync without resources needs nothing
        """Release connections."""
