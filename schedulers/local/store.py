"""The local cluster on disk, the truth a restarted gateway starts from.

    <local_root>/lock              held (flock) by the one process running this cluster
    <local_root>/jobs/<id>/        one directory a job; its name is the job id
        job.json                   the job's record, replaced atomically on every change
        script                     the job script
        launch.json, exit.json     what the supervisor runs, and how it ended (process.py)

Ids are increasing integers: the next one is the largest directory name plus one, and creating
that directory reserves it, so job directories must never be removed (or the newest kept).
"""

from __future__ import annotations

import fcntl
import os
from datetime import datetime
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ValidationError

from schedulers.errors import SchedulerUnavailable
from schedulers.local.process import ProcessRef
from schedulers.models import Identity, JobSpec, JobState

RECORD_FILE = "job.json"
SCRIPT_FILE = "script"


class JobRecord(BaseModel):
    id: str
    identity: Identity
    spec: JobSpec
    state: JobState = JobState.pending
    raw_state: str = "PENDING"
    submit: datetime
    start: datetime | None = None
    end: datetime | None = None
    process: ProcessRef | None = None  # None while pending, and if the gateway died spawning it
    stop_requested: datetime | None = None  # SIGTERM sent (cancel, time limit)
    killed: bool = False  # SIGKILL sent, the grace after SIGTERM having passed
    finished: bool = False  # no process left and the ending recorded: holds no CPU slot
    exit_code: int | None = None
    signal: int | None = None

    @property
    def holds_slots(self) -> bool:
        return self.start is not None and not self.finished


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs = root / "jobs"
        self._lock: IO[bytes] | None = None

    def lock(self) -> None:
        """Take the cluster for this process: two schedulers on one root would run jobs twice."""
        self.jobs.mkdir(parents=True, exist_ok=True)
        handle = (self.root / "lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise SchedulerUnavailable(f"the local cluster {self.root} is in use by another "
                                       "scheduler") from exc
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def load(self) -> tuple[list[JobRecord], int]:
        """Every job's record in id order, and the largest id used. A directory without a record
        is a submission that died before answering: its id stays used, it has no job."""
        ids = sorted(int(p.name) for p in self.jobs.iterdir() if p.name.isdigit())
        records = []
        for path in (self.dir(str(i)) / RECORD_FILE for i in ids):
            if path.exists():
                try:
                    records.append(JobRecord.model_validate_json(path.read_bytes()))
                except ValidationError as exc:  # refuse to start rather than drop a job unseen
                    raise SchedulerUnavailable(f"unreadable job record {path}: {exc}") from exc
        return records, ids[-1] if ids else 0

    def dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def create(self, job_id: str, script: str) -> Path:
        job_dir = self.dir(job_id)
        job_dir.mkdir(mode=0o700)  # fails if taken: an id is never given twice
        (job_dir / SCRIPT_FILE).write_text(script)
        (job_dir / SCRIPT_FILE).chmod(0o700)
        return job_dir

    def save(self, record: JobRecord) -> None:
        _write_atomic(self.dir(record.id) / RECORD_FILE, record.model_dump_json().encode())
