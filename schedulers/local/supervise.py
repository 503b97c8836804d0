"""The supervisor of one local job, run as `python -I -S supervise.py JOB_DIR` in a new session.

It reads what to run from JOB_DIR/launch.json, runs it in its own process group (the job's) and
writes how it ended to JOB_DIR/exit.json, so the gateway learns a job's exit code even if it was
down when the job ended. Standalone: the standard library only, nothing of the gateway imported.

It outlives SIGTERM (the gateway's polite stop goes to the whole group) so that it can still
record the ending; a stop that comes before the job started means it never starts. Once the
job's main process has ended it kills what the job left behind in the group, itself included,
as Slurm does when a batch script ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    job_dir = Path(sys.argv[1])
    launch = json.loads((job_dir / "launch.json").read_text())
    # A handler rather than SIG_IGN: exec resets handlers, so the job still gets the signal.
    stopped: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopped.append(signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by the gateway
    if stopped:  # stopped before the job started: it never will
        returncode = -signal.SIGTERM
    else:
        try:
            # The environment is passed whole: the supervisor's own may hold Python's locale fix.
            returncode = subprocess.call(launch["command"], env=launch["env"])
        except OSError as exc:
            print(f"hpcgw: cannot start the job script: {exc}", file=sys.stderr, flush=True)
            returncode = 127
    tmp = job_dir / "exit.json.tmp"
    tmp.write_text(json.dumps({"returncode": returncode, "ended_at": time.time()}))
    tmp.replace(job_dir / "exit.json")
    os.killpg(0, signal.SIGKILL)  # 0: this process's own group


if __name__ == "__main__":
    main()
