"""The interface every backend implements. All methods are coroutines: a backend that blocks
(paramiko, pyslurm) runs its calls in worker threads, never on the event loop."""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Sequence

from schedulers.config import ClusterConfig
from schedulers.models import (
    AccountingRecord,
    AssociationLimits,
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


class Staged:
    """A submission prepared ahead of its job's commit (`Scheduler.stage`). This one prepares
    nothing: `submit` is the scheduler's own."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted:
        """Submit `spec`, using what was prepared when it still fits."""
        return await self.scheduler.submit(identity, spec)

    def discard(self) -> None:
        """Give up what was prepared (idempotent; harmless after submit)."""


class Scheduler(ABC):
    # runs job arrays (JobSpec.resources.array); a backend that does not refuses them up front
    supports_arrays = False

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted: ...

    def stage(self, identity: Identity, spec: JobSpec) -> Staged:
        """Start what a submission of `spec` (script and environment aside) can do before the
        job is committed, without waiting for it. Nothing may reach the scheduler before
        `Staged.submit`; a staged submission discarded, or lost with this process, submits
        nothing."""
        return Staged(self)

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

    async def close(self) -> None:  # noqa: B027 - backends without resources need nothing
        """Release connections and threads."""


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
