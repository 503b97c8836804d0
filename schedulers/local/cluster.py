"""The local cluster's queue: FIFO over a number of CPU slots, with time limits.

Synchronous and thread-safe (one lock); LocalScheduler calls it from worker threads and runs
`tick` every fraction of a second. Every change is written to the job's record before it is
acted on, so a gateway that dies at any point restarts from the records:

- a pending job stays pending and starts in its turn;
- a job is marked running before its supervisor is spawned and never spawned twice (at most
  once: should the gateway die between the two, the job is reported lost);
- a running job whose supervisor still runs is tracked again, its time limit counted from its
  recorded start; one whose supervisor ended gets the exit code the supervisor wrote, and one
  whose supervisor was killed with it (nothing written) ends `failed`, raw state LOST;
- a stop (cancel, time limit) is recorded, with its end time, before SIGTERM is sent, and
  SIGKILL follows after the grace even across a restart. Like Slurm, the job shows its final
  state at once and holds its CPU slots until its processes are gone.

Time limits are enforced while a gateway runs: a job that outruns its limit while the gateway
is down is stopped when the gateway is back, or ends as it ended if it ended in between.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import signal
import subprocess
import threading
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schedulers.config import ClusterConfig
from schedulers.errors import PathRefused, SchedulerRejected, SchedulerUnavailable
from schedulers.local import files, process
from schedulers.local.store import SCRIPT_FILE, JobRecord, JobStore
from schedulers.models import (
    AccountingRecord,
    FoundJob,
    Identity,
    JobSpec,
    JobState,
    JobStatus,
)

logger = logging.getLogger(__name__)

NODE = "localhost"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
RAW_STATES = {
    JobState.pending: "PENDING",
    JobState.running: "RUNNING",
    JobState.completed: "COMPLETED",
    JobState.failed: "FAILED",
    JobState.cancelled: "CANCELLED",
    JobState.timeout: "TIMEOUT",
}
LOST = "LOST"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATTERN = re.compile(r"%(.)")
_OS_USER = pwd.getpwuid(os.getuid())  # whom jobs really run as, whatever the member's unix_user


def _now() -> datetime:
    return datetime.now(UTC)


def _set_state(record: JobRecord, state: JobState, raw: str | None = None) -> None:
    record.state = state
    record.raw_state = raw or RAW_STATES[state]


def _expand(path: str, record: JobRecord) -> str:
    """Slurm's file name patterns that mean something here: %j, %x, %u, %N and %%."""
    values = {"j": record.id, "x": record.spec.name, "u": record.identity.unix_user,
              "N": NODE, "%": "%"}
    return _PATTERN.sub(lambda m: values.get(m.group(1), m.group(0)), path)


class LocalCluster:
    def __init__(self, config: ClusterConfig, root: Path, *, time_unit_seconds: float,
                 kill_grace_seconds: float) -> None:
        self.config = config
        self.store = JobStore(root)
        self.time_unit_seconds = time_unit_seconds
        self.kill_grace = timedelta(seconds=kill_grace_seconds)
        self._lock = threading.Lock()
        self._open = False
        self._jobs: dict[str, JobRecord] = {}
        self._live: dict[str, JobRecord] = {}  # not finished: pending, or holding CPU slots
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # spawned by this process
        self._last_id = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._open:
                return
            self.store.lock()
            try:
                records, self._last_id = self.store.load()
            except Exception:
                self.store.unlock()
                raise
            self._jobs = {r.id: r for r in records}
            self._live = {r.id: r for r in records if not r.finished}
            self._open = True
            now = _now()
            for record in [r for r in self._live.values() if r.holds_slots]:
                self._supervise(record, now)

    def close(self) -> None:
        """Forget the jobs and free the root; their processes keep running."""
        with self._lock:
            self._open = False
            self._jobs, self._live = {}, {}
            self.store.unlock()

    def _check_open(self) -> None:
        if not self._open:
            raise SchedulerUnavailable("the local scheduler is closed", cluster=self.config.name)

    # --- requests ----------------------------------------------------------------------------

    def submit(self, identity: Identity, spec: JobSpec) -> str:
        self._validate(spec)
        for path in (spec.workdir, spec.stdout, spec.stderr):
            files.confine(identity, path)  # refused now rather than failing when it starts
        with self._lock:
            self._check_open()
            job_id = str(self._last_id + 1)
            self._last_id += 1
            self.store.create(job_id, spec.script)
            record = JobRecord(id=job_id, identity=identity, spec=spec, submit=_now())
            self.store.save(record)
            self._jobs[job_id] = self._live[job_id] = record
        return job_id

    def _validate(self, spec: JobSpec) -> None:
        res = spec.resources
        partition = self.config.partition(res.partition)
        if partition is None:
            raise SchedulerRejected(f"invalid partition specified: {res.partition}",
                                    cluster=self.config.name)
        excess = [f"{what} {asked} > {most}" for what, asked, most in (
            ("nodes", res.nodes, partition.max_nodes),
            ("cpus", res.cpus, min(partition.max_cpus_per_job, self.config.cpu_slots)),
            ("gpus", res.gpus, partition.max_gpus_per_job),
            ("mem_mb", res.mem_mb, partition.max_mem_mb_per_job),
            ("time_limit_minutes", res.time_limit_minutes, partition.max_time_minutes),
        ) if asked > most]
        if excess:
            raise SchedulerRejected(f"job exceeds the limits of partition {partition.name}: "
                                    + ", ".join(excess), cluster=self.config.name)
        bad = [k for k, v in spec.environment.items() if not _ENV_NAME.match(k) or "\0" in v]
        if bad:
            raise SchedulerRejected(f"invalid environment variables: {', '.join(bad)}",
                                    cluster=self.config.name)

    def cancel(self, identity: Identity, job_id: str) -> None:
        """Cancel a pending or running job; a job already ended is left as it is."""
        with self._lock:
            self._check_open()
            record = self._jobs.get(job_id)
            if record is None:
                raise SchedulerRejected(f"Invalid job id specified: {job_id}",
                                        cluster=self.config.name)
            if record.identity.name != identity.name:
                raise SchedulerRejected(f"Access/permission denied for job {job_id}",
                                        cluster=self.config.name)
            if record.state.terminal:
                return
            now = _now()
            if record.start is None:
                _set_state(record, JobState.cancelled)
                record.end = now
                self._finished(record)
            else:
                self._stop(record, JobState.cancelled, now)

    def find(self, identity: Identity, marker: str) -> FoundJob | None:
        with self._lock:
            self._check_open()
            return next((FoundJob(scheduler_id=r.id, submit=r.submit) for r in self._jobs.values()
                         if r.spec.marker == marker and r.identity.name == identity.name), None)

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        with self._lock:
            self._check_open()
            reasons = self._pending_reasons()
            return {r.id: JobStatus(scheduler_id=r.id, state=r.state, raw_state=r.raw_state,
                                    reason=reasons.get(r.id))
                    for r in (self._jobs.get(i) for i in job_ids) if r is not None}

    def _pending_reasons(self) -> dict[str, str | None]:
        """Slurm's codes: the head of the queue waits for Resources, the jobs behind it for
        Priority (strict FIFO, no backfill)."""
        pending = [r for r in self._live.values() if r.state is JobState.pending]
        if not pending:
            return {}
        head = "Resources" if pending[0].spec.resources.cpus > self._free_slots() else None
        return {r.id: head if i == 0 else "Priority" for i, r in enumerate(pending)}

    def records(self, job_ids: Sequence[str]) -> dict[str, AccountingRecord]:
        with self._lock:
            self._check_open()
            now = _now()
            return {r.id: self._accounting(r, now)
                    for r in (self._jobs.get(i) for i in job_ids) if r is not None}

    def _accounting(self, record: JobRecord, now: datetime) -> AccountingRecord:
        res = record.spec.resources
        started = record.start is not None
        elapsed = 0.0
        if record.start is not None:
            elapsed = ((record.end or now) - record.start).total_seconds()
        return AccountingRecord(
            scheduler_id=record.id, state=record.state, raw_state=record.raw_state,
            exit_code=record.exit_code, signal=record.signal, submit=record.submit,
            start=record.start, end=record.end, elapsed_seconds=max(0, round(elapsed)),
            alloc_cpus=res.cpus if started else 0, alloc_gpus=res.gpus if started else 0,
            alloc_mem_mb=res.mem_mb if started else 0, nodes=NODE if started else "",
            node_count=1 if started else 0, consumed_energy_joules=None,
            account=record.spec.account, user=record.identity.unix_user)

    def usage(self) -> tuple[int, int, int]:
        """Running jobs, pending jobs, busy CPU slots."""
        with self._lock:
            self._check_open()
            running = sum(r.state is JobState.running for r in self._live.values())
            pending = sum(r.state is JobState.pending for r in self._live.values())
            return running, pending, self.config.cpu_slots - self._free_slots()

    # --- the scheduling pass -----------------------------------------------------------------

    def tick(self) -> None:
        """Reap ended jobs, enforce time limits and kill graces, start what fits."""
        with self._lock:
            if not self._open:
                return
            now = _now()
            for record in [r for r in self._live.values() if r.holds_slots]:
                self._supervise(record, now)
            free = self._free_slots()
            for record in [r for r in self._live.values() if r.state is JobState.pending]:
                cpus = record.spec.resources.cpus
                if cpus > free:
                    break
                self._start(record, now)
                free -= cpus if record.holds_slots else 0

    def _free_slots(self) -> int:
        busy = sum(r.spec.resources.cpus for r in self._live.values() if r.holds_slots)
        return self.config.cpu_slots - busy

    def _supervise(self, record: JobRecord, now: datetime) -> None:
        if record.process is None or not process.alive(record.process):
            self._reap(record, now)
        elif record.stop_requested is None:
            limit = record.spec.resources.time_limit_minutes * self.time_unit_seconds
            if record.start is not None and now - record.start >= timedelta(seconds=limit):
                self._stop(record, JobState.timeout, now)
        elif not record.killed and now - record.stop_requested >= self.kill_grace:
            record.killed = True
            self.store.save(record)
            process.signal_group(record.process, signal.SIGKILL)

    def _stop(self, record: JobRecord, state: JobState, now: datetime) -> None:
        _set_state(record, state)
        record.end = record.stop_requested = now
        self.store.save(record)  # the reason first: a restart in between still knows it
        if record.process is not None:
            process.signal_group(record.process, signal.SIGTERM)

    def _reap(self, record: JobRecord, now: datetime) -> None:
        """Record the ending of a job whose supervisor is gone."""
        child = self._children.pop(record.id, None)
        if child is not None:
            # Not reaped yet, our supervisor still holds its pid, so the group id cannot have
            # been given to anyone else: kill what is left of it, then reap.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.poll()
        ended = process.read_exit(self.store.dir(record.id))
        if ended is not None:  # as sacct's ExitCode "code:signal" reads, no signal is None
            code = ended.returncode
            record.exit_code, record.signal = (0, -code) if code < 0 else (code, None)
        elif record.killed:
            record.exit_code, record.signal = 0, signal.SIGKILL.value
        if not record.state.terminal:  # it ended by itself
            if ended is None:
                _set_state(record, JobState.failed, LOST)
                record.end = now
            else:
                _set_state(record, JobState.completed if ended.returncode == 0
                           else JobState.failed)
                record.end = ended.ended_at
        self._finished(record)

    def _finished(self, record: JobRecord) -> None:
        record.finished = True
        self.store.save(record)
        self._live.pop(record.id, None)

    def _start(self, record: JobRecord, now: datetime) -> None:
        _set_state(record, JobState.running)
        record.start = now
        job_dir = self.store.dir(record.id)
        try:
            cwd = files.confine(record.identity, record.spec.workdir)
            stdout = files.confine(record.identity, _expand(record.spec.stdout, record))
            stderr = files.confine(record.identity, _expand(record.spec.stderr, record))
            for directory in (cwd, stdout.parent, stderr.parent):
                directory.mkdir(parents=True, exist_ok=True)
            self.store.save(record)  # running before spawned: never spawned twice
            child = process.spawn(job_dir, job_dir / SCRIPT_FILE,
                                  shebang=record.spec.script.startswith("#!"),
                                  env=self._environment(record, cwd), cwd=cwd,
                                  stdout=stdout, stderr=stderr)
        except (OSError, PathRefused) as exc:  # a job that cannot start fails; the queue goes on
            logger.warning("local job %s could not start: %s", record.id, exc)
            _set_state(record, JobState.failed)
            record.end = now
            self._finished(record)
            return
        self._children[record.id] = child
        record.process = process.describe(child.pid)
        self.store.save(record)

    def _environment(self, record: JobRecord, cwd: Path) -> dict[str, str]:
        """The spec's environment over a minimal base, then the variables of a Slurm job (the
        scheduler's own win, as in Slurm) so that scripts written for Slurm run unchanged."""
        res = record.spec.resources
        return {
            "PATH": DEFAULT_PATH, "HOME": _OS_USER.pw_dir,
            "USER": _OS_USER.pw_name, "LOGNAME": _OS_USER.pw_name,
            **record.spec.environment,
            "HPCGW_JOB_ID": record.id, "SLURM_JOB_ID": record.id, "SLURM_JOBID": record.id,
            "SLURM_JOB_NAME": record.spec.name, "SLURM_JOB_PARTITION": res.partition,
            "SLURM_CPUS_PER_TASK": str(res.cpus_per_task), "SLURM_NTASKS": str(res.ntasks),
            "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": NODE, "SLURM_SUBMIT_DIR": str(cwd),
        }
