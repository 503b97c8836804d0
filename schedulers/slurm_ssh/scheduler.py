"""Slurm over SSH: each call is one remote command (or one SFTP session) as the right identity.

Members' own identities submit, cancel, look up markers and move files; the admin identity reads
the queue and the accounting of everyone's jobs (one `squeue`/`sacct` for many jobs)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Protocol, TypeVar

from schedulers.base import AccountingSync, Scheduler, Staged, StagesSubmissions
from schedulers.config import ClusterConfig
from schedulers.errors import PathRefused, SchedulerError, SchedulerRejected
from schedulers.metrics import remote_command
from schedulers.models import (
    AccountingRecord,
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
from schedulers.slurm_ssh.commands import (
    Sacct,
    SacctMarker,
    SacctmgrShowCluster,
    Sbatch,
    Scancel,
    ScontrolHold,
    ScontrolPing,
    Squeue,
    SqueueMarker,
)
from schedulers.slurm_ssh.paths import confine
from schedulers.slurm_ssh.transport import Result, SshTransport, StartedCommand

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")
JOB_ID = re.compile(r"^\d+(_\d+)?$")


class Command(Protocol[T_co]):
    def argv(self) -> list[str]: ...

    def parse(self, result: Result) -> T_co: ...


def admin_identity(config: ClusterConfig) -> Identity:
    if config.admin is None:
        raise ValueError(f"cluster {config.name} has no admin identity")
    user = config.admin.unix_user
    return Identity(name="admin", unix_user=user, key_file=str(config.admin.key_file),
                    work_root=config.work_root.format(unix_user=user))


def _job_ids(scheduler_ids: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(scheduler_ids))
    for job_id in ids:
        if not JOB_ID.match(job_id):
            raise SchedulerRejected(f"not a Slurm job id: {job_id!r}")
    return ids


class SlurmSshScheduler(Scheduler, StagesSubmissions):
    supports_arrays = True
    supports_hold = True

    def __init__(self, config: ClusterConfig, *, transport: SshTransport | None = None) -> None:
        super().__init__(config)
        self.admin = admin_identity(config)
        self.transport = transport or SshTransport(config)

    async def execute(self, identity: Identity, command: Command[T], *,
                      stdin: bytes | None = None, dirs: Sequence[str] = (),
                      timeout: float | None = None,  # noqa: ASYNC109 - see SshTransport.run
                      ) -> T:
        with remote_command(self.name, command):
            result = await self.transport.run(identity, command.argv(), stdin=stdin, dirs=dirs,
                                              timeout=timeout)
            try:
                return command.parse(result)
            except SchedulerError as exc:
                exc.cluster = exc.cluster or self.name
                raise

    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted:
        sbatch = Sbatch(spec, identity.work_root)
        return await self.execute(identity, sbatch, stdin=sbatch.stdin(), dirs=sbatch.dirs())

    def stage(self, identity: Identity, spec: JobSpec) -> Staged | None:
        """`sbatch` started, waiting for its script on stdin, while the job is committed: its
        connection, channel, sshd's session and sbatch's start cost the submission nothing
        then. sbatch reads the whole script before it contacts the controller and refuses an
        empty one ("Batch script is empty!"): until the script is sent nothing is submitted."""
        try:
            sbatch = Sbatch(spec, identity.work_root)
            argv, dirs = sbatch.argv(), sbatch.dirs()
        except SchedulerError:
            return None  # refused again, after the commit, by submit
        return _StagedSbatch(self, identity, argv, dirs,
                             self.transport.start(identity, argv, dirs=dirs))

    async def states(self, scheduler_ids: Sequence[str]) -> dict[str, JobStatus]:
        ids = _job_ids(scheduler_ids)
        return await self.execute(self.admin, Squeue(ids)) if ids else {}

    async def accounting(self, scheduler_ids: Sequence[str]) -> dict[str, AccountingRecord]:
        ids = _job_ids(scheduler_ids)
        return await self.execute(self.admin, Sacct(ids)) if ids else {}

    async def cancel(self, identity: Identity, scheduler_id: str) -> None:
        (job_id,) = _job_ids([scheduler_id])
        await self.execute(identity, Scancel(job_id))

    async def find_by_marker(self, identity: Identity, marker: str) -> FoundJob | None:
        found = await self.execute(identity, SqueueMarker(identity.unix_user, marker))
        if found is None:
            found = await self.execute(identity, SacctMarker(identity.unix_user, marker))
        return found

    async def read_output(self, identity: Identity, path: str, offset: int,
                          limit: int) -> OutputChunk:
        if offset < 0 or limit < 0:
            raise SchedulerRejected("offset and limit must not be negative")
        # a file not written yet raises NoSuchFile (a SchedulerRejected), as the local backend
        data, size = await self.transport.read_range(identity, identity.work_root,
                                                     self._file(identity, path), offset, limit)
        return OutputChunk(data=data, offset=offset, next_offset=offset + len(data), size=size)

    async def put_file(self, identity: Identity, path: str, data: bytes) -> None:
        await self.transport.write_file(identity, identity.work_root,
                                        self._file(identity, path), data)

    async def get_file(self, identity: Identity, path: str, limit: int) -> bytes:
        data, _ = await self.transport.read_range(identity, identity.work_root,
                                                  self._file(identity, path), 0, limit,
                                                  whole=True)
        return data

    async def list_files(self, identity: Identity, path: str) -> list[FileEntry]:
        return await self.transport.list_dir(identity, identity.work_root,
                                             confine(identity.work_root, path))

    async def health(self) -> Health:
        started = time.perf_counter()
        try:
            ok, detail = await self.execute(self.admin, ScontrolPing())
        except SchedulerError as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc.message}"
        return Health(cluster=self.name, ok=ok, detail=detail,
                      latency_ms=(time.perf_counter() - started) * 1000)

    async def status(self) -> ClusterStatus:
        """`scontrol ping` (slurmctld), then `sacctmgr show cluster` (slurmdbd), as the admin."""
        try:
            slurmctld, ctld = await self.execute(self.admin, ScontrolPing())
            slurmdbd, dbd = await self.execute(self.admin, SacctmgrShowCluster())
        except SchedulerError as exc:
            return ClusterStatus(cluster=self.name, reachable=False, slurmctld=None,
                                 slurmdbd=None, detail=f"{type(exc).__name__}: {exc.message}")
        return ClusterStatus(cluster=self.name, reachable=True, slurmctld=slurmctld,
                             slurmdbd=slurmdbd, detail=f"{ctld}; {dbd}")

    def accounting_sync(self) -> AccountingSync:
        from schedulers.slurm_ssh.accounting import SlurmAccountingSync  # it imports this module

        return SlurmAccountingSync(self.config, scheduler=self)

    async def hold(self, scheduler_ids: Sequence[str]) -> None:
        ids = _job_ids(scheduler_ids)
        if ids:
            await self.execute(self.admin, ScontrolHold("hold", tuple(ids)))

    async def release(self, scheduler_ids: Sequence[str]) -> None:
        ids = _job_ids(scheduler_ids)
        if ids:
            await self.execute(self.admin, ScontrolHold("release", tuple(ids)))

    async def close(self) -> None:
        await self.transport.close()

    @staticmethod
    def _file(identity: Identity, path: str) -> str:
        full = confine(identity.work_root, path)
        if full == confine(identity.work_root, ""):
            raise PathRefused("a file path is needed, not the work directory")
        return full


class _StagedSbatch(Staged):
    def __init__(self, scheduler: SlurmSshScheduler, identity: Identity, argv: list[str],
                 dirs: list[str], started: StartedCommand) -> None:
        self.scheduler = scheduler
        self._identity = identity
        self._argv = argv
        self._dirs = dirs
        self._started = started

    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted:
        sbatch = Sbatch(spec, identity.work_root)
        if (identity, sbatch.argv(), sbatch.dirs()) != (self._identity, self._argv, self._dirs):
            self.discard()  # the committed job differs from what was staged
            return await self.scheduler.submit(identity, spec)
        try:
            with remote_command(self.scheduler.name, sbatch):
                return sbatch.parse(await self._started.finish(sbatch.stdin()))
        except SchedulerError as exc:
            exc.cluster = exc.cluster or self.scheduler.name
            raise
        finally:
            self.discard()

    def discard(self) -> None:
        self._started.abandon()
