"""A scheduler behind the real interface, in memory, scripted by the tests; it counts its calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from consortium.base import utcnow
from gateway.jobs.arrays import parse_array
from schedulers.base import Scheduler
from schedulers.config import ClusterConfig
from schedulers.errors import (
    IsADirectory,
    NotADirectory,
    SchedulerRejected,
    SchedulerUnavailable,
)
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


@dataclass
class FakeJob:
    id: str
    spec: JobSpec
    identity: Identity
    state: JobState = JobState.pending
    reason: str | None = "Priority"
    submit: datetime | None = field(default_factory=utcnow)  # None: Slurm reports none
    start: datetime | None = None
    end: datetime | None = None
    exit_code: int | None = None
    in_accounting: bool = True
    in_queue: bool = True
    # what Slurm holds it at beyond its spec (cpus=4, exclusive=True, ...): see `held_at`
    widened: dict[str, object] = field(default_factory=dict)

    def held_at(self) -> dict[str, object]:
        """The sizes squeue reports: the spec's (per task for an array), unless widened."""
        res = self.spec.resources
        return {"cpus": res.cpus, "mem_mb": res.mem_mb_per_node * res.nodes,
                "nodes": res.nodes, "gpus": res.gpus,
                "time_limit_minutes": res.time_limit_minutes, "exclusive": False,
                **self.widened}


class FakeScheduler(Scheduler):
    """Job arrays as Slurm has them: each task a job of its own, `<array id>_<task id>`."""

    supports_arrays = True

    def __init__(self, config: ClusterConfig) -> None:
        super().__init__(config)
        self.jobs: dict[str, FakeJob] = {}
        self.arrays: dict[str, list[str]] = {}  # array id -> its tasks' ids
        self.calls: Counter[str] = Counter()
        self.files: dict[tuple[str, str], bytes] = {}  # (work_root, path) -> content
        self.cancelled: list[str] = []
        # what the next submit does: None = accept; an exception instance = raise it
        self.submit_error: Exception | None = None
        # an exception raised after the job was registered (the answer was lost)
        self.lost_answer: Exception | None = None
        self.on_submit: Callable[[JobSpec], None] | None = None
        self.down = False
        self._next = 1000

    def _check_up(self) -> None:
        if self.down:
            raise SchedulerUnavailable("connection refused", cluster=self.name)

    async def submit(self, identity: Identity, spec: JobSpec) -> Submitted:
        self.calls["submit"] += 1
        if self.on_submit is not None:
            self.on_submit(spec)
        self._check_up()
        if self.submit_error is not None:
            raise self.submit_error
        self._next += 1
        job_id = str(self._next)
        if spec.resources.array is None:
            self.jobs[job_id] = FakeJob(id=job_id, spec=spec, identity=identity)
        else:
            tasks = [f"{job_id}_{t}" for t in parse_array(spec.resources.array).task_ids]
            self.arrays[job_id] = tasks
            self.jobs.update((t, FakeJob(id=t, spec=spec, identity=identity)) for t in tasks)
        if self.lost_answer is not None:
            raise self.lost_answer
        return Submitted(scheduler_id=job_id)

    def _ids(self, scheduler_ids: Sequence[str]) -> list[str]:
        """The jobs asked for, an array as its tasks."""
        return [t for i in scheduler_ids for t in self.arrays.get(i, [i])]

    async def states(self, scheduler_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.calls["states"] += 1
        self._check_up()
        return {
            i: JobStatus.model_validate({
                "scheduler_id": i, "state": j.state, "raw_state": j.state.value.upper(),
                "reason": j.reason if j.state is JobState.pending else None, **j.held_at()})
            for i in self._ids(scheduler_ids)
            if (j := self.jobs.get(i)) is not None and j.in_queue
        }

    async def accounting(self, scheduler_ids: Sequence[str]) -> dict[str, AccountingRecord]:
        self.calls["accounting"] += 1
        self._check_up()
        records = {}
        for i in self._ids(scheduler_ids):
            job = self.jobs.get(i)
            if job is None or not job.in_accounting:
                continue
            res = job.spec.resources
            started = job.start is not None
            elapsed = int(((job.end or utcnow()) - job.start).total_seconds()) if started else 0
            records[i] = AccountingRecord(
                scheduler_id=i, state=job.state, raw_state=job.state.value.upper(),
                exit_code=job.exit_code, submit=job.submit, start=job.start, end=job.end,
                elapsed_seconds=elapsed, alloc_cpus=res.cpus if started else 0,
                alloc_gpus=res.gpus if started else 0,
                alloc_mem_mb=res.mem_mb if started else 0, nodes="node1" if started else "",
                node_count=res.nodes if started else 0)
        return records

    async def cancel(self, identity: Identity, scheduler_id: str) -> None:
        self.calls["cancel"] += 1
        self._check_up()
        jobs = [self.jobs.get(i) for i in self._ids([scheduler_id])]
        if all(job is None or job.state.terminal for job in jobs):
            raise SchedulerRejected("Job has already finished")
        self.cancelled.append(scheduler_id)

    async def find_by_marker(self, identity: Identity, marker: str) -> FoundJob | None:
        self.calls["find_by_marker"] += 1
        self._check_up()
        return next((FoundJob(scheduler_id=i, submit=j.submit)
                     for i, j in self.jobs.items() if j.spec.marker == marker), None)

    async def read_output(self, identity: Identity, path: str, offset: int,
                          limit: int) -> OutputChunk:
        self.calls["read_output"] += 1
        self._check_up()
        data = self.files.get((identity.work_root, path))
        if data is None:
            raise SchedulerRejected(f"cannot read {path}: No such file or directory")
        part = data[offset:offset + limit]
        return OutputChunk(data=part, offset=offset, next_offset=offset + len(part),
                           size=len(data))

    async def put_file(self, identity: Identity, path: str, data: bytes) -> None:
        self.calls["put_file"] += 1
        self._check_up()
        self.files[(identity.work_root, path)] = data

    async def get_file(self, identity: Identity, path: str, limit: int) -> bytes:
        self.calls["get_file"] += 1
        self._check_up()
        data = self.files.get((identity.work_root, path))
        if data is None and self._under(identity, path):
            raise IsADirectory(f"{path} is a directory")
        if data is None:
            raise SchedulerRejected(f"cannot read {path}: No such file or directory")
        return data[:limit]

    def _under(self, identity: Identity, path: str) -> list[tuple[str, bytes]]:
        """The files below directory `path` ("" the work root), as (path below it, content)."""
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        return [(p.removeprefix(prefix), data) for (root, p), data in self.files.items()
                if root == identity.work_root and p.startswith(prefix)]

    async def list_files(self, identity: Identity, path: str) -> list[FileEntry]:
        """Directories are implied by the files' paths."""
        self.calls["list_files"] += 1
        self._check_up()
        if (identity.work_root, path) in self.files:
            raise NotADirectory(f"{path} is not a directory")
        below = self._under(identity, path)
        if not below and path.strip("/"):
            raise SchedulerRejected(f"cannot list {path}: No such file or directory")
        entries: dict[str, FileEntry] = {}
        for rest, data in below:
            name, _, deeper = rest.partition("/")
            entries[name] = FileEntry(name=name, type="dir" if deeper else "file",
                                      size=0 if deeper else len(data), modified=utcnow())
        return sorted(entries.values(), key=lambda e: e.name)

    async def health(self) -> Health:
        return Health(cluster=self.name, ok=not self.down, detail="fake", latency_ms=0.0)

    # --- what the tests make happen on the "cluster" -------------------------------------

    def only(self) -> FakeJob:
        (job,) = self.jobs.values()
        return job

    def run(self, job_id: str, *, started: datetime | None = None) -> None:
        job = self.jobs[job_id]
        job.state, job.reason = JobState.running, None
        job.start = started or utcnow()

    def end(self, job_id: str, state: JobState = JobState.completed, *, seconds: int = 600,
            exit_code: int = 0) -> None:
        job = self.jobs[job_id]
        if job.start is None:
            job.start = utcnow() - timedelta(seconds=seconds)
        job.state, job.reason = state, None
        job.end = job.start + timedelta(seconds=seconds)
        job.exit_code = exit_code
