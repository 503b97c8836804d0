"""The processes of local jobs: start one under its supervisor, know it again after a gateway
restart, signal its process group. Linux only: a process is recognised through /proc.

A job's supervisor leads a session of its own, so its pid is also the job's process group id
and a signal to that group reaches the job and everything it started (unless a job process
starts a session of its own: there are no cgroups here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

SUPERVISOR = Path(__file__).with_name("supervise.py")
LAUNCH_FILE = "launch.json"
EXIT_FILE = "exit.json"


class ProcessRef(BaseModel):
    """A supervisor, told apart from a later process given the same pid by boot and start time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: int
    boot_id: str
    start_ticks: int  # /proc/<pid>/stat field 22: clock ticks from boot to the process's start


@dataclass(frozen=True)
class Exit:
    returncode: int  # negative: killed by that signal
    ended_at: datetime


@cache
def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _stat(pid: int) -> tuple[str, int] | None:
    """The process's state letter and start ticks, None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and ')'
    return fields[0], int(fields[19])


def describe(pid: int) -> ProcessRef:
    stat = _stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return ProcessRef(pid=pid, boot_id=boot_id(), start_ticks=stat[1])


def alive(ref: ProcessRef) -> bool:
    """True while the supervisor runs; a zombie (ended, not yet reaped) counts as ended."""
    if ref.boot_id != boot_id():
        return False
    stat = _stat(ref.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == ref.start_ticks


def signal_group(ref: ProcessRef, signum: signal.Signals) -> None:
    """Signal the job's process group, only while its supervisor is the one recorded (after it
    ended the group id may belong to another session)."""
    if alive(ref):
        with suppress(ProcessLookupError):
            os.killpg(ref.pid, signum)


def spawn(job_dir: Path, script: Path, *, shebang: bool, env: dict[str, str], cwd: Path,
          stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
    """Start the job's supervisor in a new session. Output files are truncated, as Slurm's
    default open mode does; one file for both streams is opened once."""
    command = [str(script)] if shebang else [shutil.which("bash") or "/bin/bash", str(script)]
    (job_dir / LAUNCH_FILE).write_text(json.dumps({"command": command, "env": env}))
    with ExitStack() as stack:
        out = stack.enter_context(stdout.open("wb"))
        err = out if stderr == stdout else stack.enter_context(stderr.open("wb"))
        # The supervisor starts with SIGTERM blocked (the mask is inherited) and unblocks it
        # once its handler is in place: a stop right after the start cannot kill it unrecorded.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        stack.callback(signal.pthread_sigmask, signal.SIG_UNBLOCK, {signal.SIGTERM})
        return subprocess.Popen(
            [sys.executable, "-I", "-S", str(SUPERVISOR), str(job_dir)],
            cwd=cwd, env={}, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True)


def read_exit(job_dir: Path) -> Exit | None:
    """How the job ended, as its supervisor wrote it; None if it never did (killed, lost)."""
    try:
        data = json.loads((job_dir / EXIT_FILE).read_text())
    except FileNotFoundError:
        return None
    return Exit(returncode=int(data["returncode"]),
                ended_at=datetime.fromtimestamp(float(data["ended_at"]), UTC))
