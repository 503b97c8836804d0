"""Raw sbatch one job per remote command (what a researcher runs, bench/edge.py's throughput
baseline) against a group of jobs per remote command (a remote loop reading each script's
length, then its bytes, into the same `sbatch --parsable` line): jobs/s and the machine's CPU
per job, rounds interleaved. It measures what a gateway sending its submissions in groups
could save on the cluster's side (issue 10's throughput floor); no gateway runs.

Against the test cluster (scripts/testcluster.sh up), as its alpha user; every job is
cancelled at the end. The machine's CPU is every process's (/proc/stat), the cluster's
daemons included, so run it on a quiet machine.

    .venv/bin/python bench/sbatch_groups.py [--jobs 128] [--connections 8] [--group 16]
        [--rounds 2]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.jobs import RESOURCES, SCRIPT, raw_sbatch  # noqa: E402
from bench.scheduler import cluster_env, connect  # noqa: E402
from bench.scheduler import run as remote  # noqa: E402
from gateway.jobs.submission import marker_for, new_public_id  # noqa: E402
from schedulers.models import JobSpec, Resources  # noqa: E402
from schedulers.slurm_ssh.commands import Sbatch  # noqa: E402
from schedulers.slurm_ssh.transport import command_line  # noqa: E402


def busy_jiffies() -> int:
    """The machine's CPU time so far, idle and iowait left out, in clock ticks."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4]


def sbatch_of(env: dict[str, str]) -> Sbatch:
    """The job bench/jobs.py's raw_sbatch sends, with a marker of its own."""
    public_id = new_public_id()
    spec = JobSpec(marker=marker_for("raw", public_id), name="bench", script=SCRIPT,
                   account=env["ALPHA_ACCOUNT"],
                   resources=Resources(partition=env["DEFAULT_PARTITION"], **RESOURCES),
                   stdout=f"hpcgw-{public_id}.out", stderr=f"hpcgw-{public_id}.err")
    return Sbatch(spec, env["WORK_ROOT"].format(unix_user=env["ALPHA_USER"]))


def grouped(ssh: paramiko.SSHClient, env: dict[str, str], count: int) -> list[str]:
    """`count` jobs in one remote command: their Slurm ids."""
    jobs = [sbatch_of(env) for _ in range(count)]
    # the options are the same for every job but the marker; the first job's line sends all
    # (the cost is what is measured, not which marker each job carries)
    loop = f'while read -r n; do head -c "$n" | {command_line(jobs[0].argv())} || exit 1; done'
    stdin = b"".join(f"{len(job.stdin())}\n".encode() + job.stdin() for job in jobs)
    return remote(ssh, "bash -c " + shlex.quote(loop), stdin).split()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=128)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--group", type=int, default=16, help="jobs per remote command")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    env = cluster_env()
    ssh = [connect(env, env["ALPHA_USER"], env["ALPHA_KEY"]) for _ in range(args.connections)]
    submitted: list[str] = []

    def one_each(k: int) -> list[str]:
        return [raw_sbatch(ssh[k], env) for _ in range(k, args.jobs, args.connections)]

    def in_groups(k: int) -> list[str]:
        mine = len(range(k, args.jobs, args.connections))
        return [i for start in range(0, mine, args.group)
                for i in grouped(ssh[k], env, min(args.group, mine - start))]

    def timed(label: str, client: Callable[[int], list[str]]) -> None:
        cpu, started = busy_jiffies(), time.perf_counter()
        with ThreadPoolExecutor(args.connections) as pool:
            ids = [i for got in pool.map(client, range(args.connections)) for i in got]
        seconds, ticks = time.perf_counter() - started, busy_jiffies() - cpu
        submitted.extend(ids)
        ms_per_tick = 1000 / 100  # USER_HZ, 100 on Linux
        print(f"  {label}: {len(ids)} jobs, {len(ids) / seconds:.1f} jobs/s, machine CPU "
              f"{ticks * ms_per_tick / len(ids):.2f} ms/job")

    try:
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}, {args.connections} SSH connections")
            timed("one job per remote command (baseline)", one_each)
            timed(f"{args.group} jobs per remote command", in_groups)
    finally:
        for start in range(0, len(submitted), 500):
            remote(ssh[0], "scancel " + " ".join(submitted[start:start + 500]))
        for client in ssh:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
