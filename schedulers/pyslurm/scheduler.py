"""The Scheduler interface over pyslurm (Slurm's C API), for a gateway on a Slurm login node.

What it takes, honestly:
- pyslurm built against the cluster's own Slurm version (PyPI's needs Slurm 25.11 libraries;
  Debian 12/13 ship 22.05/24.11), so it is an optional extra, imported on first use.
- Submitting for a member's Unix user (`user_id`/`group_id`, sbatch's --uid/--gid) needs the
  gateway to run as root or as SlurmUser; otherwise every job is the gateway's own.
- Files are read and written by the gateway's process on the login node's shared filesystem,
  with the local backend's confinement to the work root (schedulers.local.files). Unlike
  slurm_ssh, submit creates no directory: the workdir and the output directories must exist
  (put_file creates its parents) and be writable by the member.
- Untested here: no Debian package of pyslurm matches Debian's Slurm, so its contract tests
  are skipped wherever `import pyslurm` fails.
Every pyslurm call blocks, so each runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import pwd
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from types import ModuleType
from typing import Any, TypeVar

from schedulers.base import JOB_NAME_PREFIX, Scheduler
from schedulers.config import ClusterConfig
from schedulers.errors import SchedulerError, SchedulerRejected, SchedulerUnavailable
from schedulers.local import files
from schedulers.models import (
    AccountingRecord,
    FileEntry,
    FoundJob,
    Health,
    Identity,
    JobSpec,
    JobState,
    JobStatus,
    OutputChunk,
    Submitted,
)
from schedulers.slurm_ssh.paths import confine
from schedulers.slurm_ssh.states import job_state

T = TypeVar("T")


def _pyslurm() -> ModuleType:
    import pyslurm

    module: ModuleType = pyslurm
    return module


def _job_id(job: Any) -> str:
    task = getattr(job, "array_task_id", None)
    array = getattr(job, "array_id", None)
    return f"{array}_{task}" if array and task is not None else str(job.id)


def _values(collection: Any) -> Iterable[Any]:
    # pyslurm's collections are dicts (by id) in some versions, lists in others
    return list(collection.values()) if hasattr(collection, "values") else list(collection)


def _time(epoch: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


class PySlurmScheduler(Scheduler):
    def __init__(self, config: ClusterConfig) -> None:
        super().__init__(config)
        self._slurm = _pyslurm()

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except SchedulerError:
            raise
        except self._slurm.RPCError as exc:
            raise SchedulerRejected(str(exc), cluster=self.name) from exc
        except (self._slurm.PyslurmError, OSError) as exc:
            raise SchedulerUnavailable(str(exc), cluster=self.name) from exc

    def _submit(self, identity: Identity, spec: JobSpec) -> str:
        r = spec.resources
        account = pwd.getpwnam(identity.unix_user)
        desc = self._slurm.JobSubmitDescription(
            name=f"{JOB_NAME_PREFIX}{spec.name}", comment=spec.marker, script=spec.script,
            partitions=r.partition, nodes=r.nodes, ntasks=r.ntasks,
            cpus_per_task=r.cpus_per_task, memory_per_node=r.mem_mb_per_node,
            time_limit=r.time_limit_minutes, account=spec.account,
            user_id=account.pw_uid, group_id=account.pw_gid,
            working_directory=confine(identity.work_root, spec.workdir),
            standard_output=confine(identity.work_root, spec.stdout).replace("%", "%%"),
            standard_error=confine(identity.work_root, spec.stderr).replace("%", "%%"),
            environment=dict(spec.environment))
        if r.gpus:
            desc.gpus = r.gpus  # the job's; gres_per_node would multiply by the nodes
        return str(desc.submit())

    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted:
        return Submitted(scheduler_id=await self._call(partial(self._submit, identity, spec)))

    def _states(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        wanted, states = set(ids), {}
        for job in _values(self._slurm.Jobs.load()):  # one RPC for the whole queue
            job_id = _job_id(job)
            if job_id in wanted:
                state = job_state(job.state)
                reason = getattr(job, "state_reason", None)
                states[job_id] = JobStatus(
                    scheduler_id=job_id, state=state, raw_state=job.state,
                    reason=reason if state is JobState.pending and reason != "None" else None)
        return states

    async def states(self, scheduler_ids: Sequence[str]) -> dict[str, JobStatus]:
        return await self._call(partial(self._states, list(scheduler_ids))) if scheduler_ids else {}

    def _accounting(self, ids: Sequence[str]) -> dict[str, AccountingRecord]:
        db = self._slurm.db
        raw_ids = sorted({int(i.partition("_")[0]) for i in ids})
        wanted, records = set(ids), {}
        for job in _values(db.Jobs.load(db.JobFilter(ids=raw_ids))):
            job_id = _job_id(job)
            if job_id not in wanted:
                continue
            energy = getattr(getattr(job, "stats", None), "consumed_energy", None)
            records[job_id] = AccountingRecord(
                scheduler_id=job_id, state=job_state(job.state), raw_state=job.state,
                exit_code=job.exit_code, signal=getattr(job, "exit_code_signal", None) or None,
                submit=_time(job.submit_time), start=_time(job.start_time),
                end=_time(job.end_time), elapsed_seconds=job.elapsed_time or 0,
                alloc_cpus=job.cpus or 0, alloc_mem_mb=job.memory or 0,
                alloc_gpus=sum((getattr(job, "gpus", None) or {}).values()),
                nodes=job.nodelist or "", node_count=job.num_nodes or 0,
                consumed_energy_joules=float(energy) if energy else None,
                account=job.account, user=job.user_name)
        return records

    async def accounting(self, scheduler_ids: Sequence[str]) -> dict[str, AccountingRecord]:
        if not scheduler_ids:
            return {}
        return await self._call(partial(self._accounting, list(scheduler_ids)))

    async def cancel(self, identity: Identity, scheduler_id: str) -> None:
        job = self._slurm.Job(int(scheduler_id.partition("_")[0]))
        await self._call(job.cancel)

    def _find(self, identity: Identity, marker: str) -> FoundJob | None:
        for job in _values(self._slurm.Jobs.load()):
            if job.comment == marker and job.user_name == identity.unix_user:
                return FoundJob(scheduler_id=_job_id(job), submit=_time(job.submit_time))
        db = self._slurm.db
        found = db.Jobs.load(db.JobFilter(users=[identity.unix_user]))
        return next((FoundJob(scheduler_id=_job_id(j), submit=_time(j.submit_time))
                     for j in _values(found) if j.comment == marker), None)

    async def find_by_marker(self, identity: Identity, marker: str) -> FoundJob | None:
        return await self._call(partial(self._find, identity, marker))

    async def read_output(self, identity: Identity, path: str, offset: int,
                          limit: int) -> OutputChunk:
        return await self._call(partial(files.read_chunk, identity, path, offset, limit))

    async def put_file(self, identity: Identity, path: str, data: bytes) -> None:
        await self._call(partial(files.write_whole, identity, path, data))

    async def get_file(self, identity: Identity, path: str, limit: int) -> bytes:
        return await self._call(partial(files.read_whole, identity, path, limit))

    async def list_files(self, identity: Identity, path: str) -> list[FileEntry]:
        return await self._call(partial(files.list_dir, identity, path))

    async def health(self) -> Health:
        started = time.perf_counter()
        try:
            ping = await self._call(self._slurm.slurmctld.ping_primary)
            ok = bool(ping.is_responding)
            detail = f"slurmctld on {ping.hostname} {'answers' if ok else 'does not answer'}"
        except SchedulerError as exc:
            ok, detail = False, exc.message
        return Health(cluster=self.name, ok=ok, detail=detail,
                      latency_ms=(time.perf_counter() - started) * 1000)
