"""Scheduler benchmark against the project's Slurm test cluster (scripts/testcluster.sh up).

1. Submit latency, interleaved, N submits each: the slurm_ssh backend (`Scheduler.submit`)
   into an existing job directory, raw paramiko running the same sbatch line on one persistent
   connection (TCP_NODELAY), and raw paramiko opening a new connection (connect + auth + exec)
   for every submit. For information, the backend into a new directory each time (its mkdir).
2. The states of 1000 queued (held) jobs through the backend: remote commands and seconds.
Every job is held (`#SBATCH --hold`) and cancelled at the end. Exit 1 if a floor is missed:
backend median <= 1.5 x raw persistent and <= 0.2 x new connection; 1000 states in 1 command
under 1 s.

    .venv/bin/python bench/scheduler.py [-n 60]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paramiko

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schedulers.config import (  # noqa: E402
    BillingWeights,
    ClusterConfig,
    IdentityConfig,
    PartitionConfig,
)
from schedulers.models import Identity, JobSpec, Resources  # noqa: E402
from schedulers.slurm_ssh.commands import Sbatch  # noqa: E402
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler  # noqa: E402
from schedulers.slurm_ssh.transport import command_line  # noqa: E402

SCRIPT = "#!/bin/bash\n#SBATCH --hold\ntrue\n"


def cluster_env() -> dict[str, str]:
    tc = ROOT / "scripts" / "testcluster.sh"
    if subprocess.run([tc, "status"], capture_output=True, check=False).returncode != 0:
        sys.exit("the test cluster is not up: sudo scripts/testcluster.sh up")
    out = subprocess.run([tc, "env"], capture_output=True, text=True, check=True).stdout
    pairs = (shlex.split(line)[0].split("=", 1) for line in out.splitlines() if "=" in line)
    return {k.removeprefix("HPCGW_TC_"): v for k, v in pairs}


def connect(env: dict[str, str], user: str, key: str) -> paramiko.SSHClient:
    sock = socket.create_connection((env["SSH_HOST"], int(env["SSH_PORT"])), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.get_host_keys().load(env["KNOWN_HOSTS"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(env["SSH_HOST"], port=int(env["SSH_PORT"]), username=user, key_filename=key,
                   sock=sock, allow_agent=False, look_for_keys=False, timeout=10)
    return client


def run(client: paramiko.SSHClient, line: str, stdin: bytes = b"") -> str:
    chan_in, chan_out, chan_err = client.exec_command(line, timeout=120)
    if stdin:
        chan_in.write(stdin)
    chan_in.channel.shutdown_write()
    out = chan_out.read().decode()
    if chan_out.channel.recv_exit_status() != 0:
        raise RuntimeError(f"{line[:80]}: {chan_err.read().decode()}")
    return out


def stats(name: str, seconds: list[float]) -> float:
    ms = sorted(s * 1000 for s in seconds)
    median, p90 = statistics.median(ms), statistics.quantiles(ms, n=10)[-1]
    print(f"  {name:<34} n={len(ms):<4} median {median:7.1f} ms  p90 {p90:7.1f} ms  "
          f"min {ms[0]:6.1f}  max {ms[-1]:7.1f}")
    return median


def timed(fn: Callable[[], str]) -> tuple[float, str]:
    t = time.perf_counter()
    job_id = fn()
    return time.perf_counter() - t, job_id


class Bench:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.user, self.key = env["ALPHA_USER"], env["ALPHA_KEY"]
        config = ClusterConfig(
            name=env["CLUSTER"], backend="slurm_ssh", host=env["SSH_HOST"],
            port=int(env["SSH_PORT"]), known_hosts=Path(env["KNOWN_HOSTS"]),
            admin=IdentityConfig(unix_user=env["ADMIN_USER"], key_file=Path(env["ADMIN_KEY"])),
            partitions=[PartitionConfig(name=env["DEFAULT_PARTITION"], max_time_minutes=60,
                                        max_cpus_per_job=4, max_mem_mb_per_job=4096,
                                        billing=BillingWeights(cpu=0.25, mem_gb=0.0625))])
        self.alpha = Identity(name="alpha", unix_user=self.user, key_file=self.key,
                              work_root=env["WORK_ROOT"].format(unix_user=self.user))
        self.backend = SlurmSshScheduler(config)
        self.persistent = connect(env, self.user, self.key)
        self.submitted: list[str] = []

    def spec(self, workdir: str = "bench") -> JobSpec:
        return JobSpec(marker=f"bench-{uuid.uuid4().hex}", name="bench", script=SCRIPT,
                       resources=Resources(partition=self.env["DEFAULT_PARTITION"], mem_mb=100,
                                           time_limit_minutes=1),
                       workdir=workdir, stdout=f"{workdir}/out", stderr=f"{workdir}/err")

    def raw_line(self) -> str:
        """The backend's own sbatch line, without its mkdir."""
        return command_line(Sbatch(self.spec(), self.alpha.work_root).argv())

    def raw_persistent(self) -> str:
        return run(self.persistent, self.raw_line(), SCRIPT.encode()).strip()

    def raw_fresh(self) -> str:
        client = connect(self.env, self.user, self.key)
        try:
            return run(client, self.raw_line(), SCRIPT.encode()).strip()
        finally:
            client.close()

    async def submit_latency(self, n: int) -> tuple[float, float, float]:
        print(f"submit latency: {n} submits per method, interleaved, held jobs")
        loop = asyncio.get_running_loop()
        times: dict[str, list[float]] = {"backend": [], "new dir": [], "persistent": [],
                                         "fresh": []}
        for i in range(n + 3):  # the first 3 rounds warm up, untimed
            elapsed = {}
            for name, workdir in (("backend", "bench"), ("new dir", f"bench/{uuid.uuid4()}")):
                t = time.perf_counter()
                job = await self.backend.submit(self.alpha, self.spec(workdir))
                elapsed[name] = time.perf_counter() - t
                self.submitted.append(job.scheduler_id)
            for name, fn in (("persistent", self.raw_persistent), ("fresh", self.raw_fresh)):
                elapsed[name], job_id = await loop.run_in_executor(None, timed, fn)
                self.submitted.append(job_id)
            if i >= 3:
                for name, value in elapsed.items():
                    times[name].append(value)
        medians = (stats("slurm_ssh backend submit", times["backend"]),
                   stats("raw paramiko, persistent connection", times["persistent"]),
                   stats("raw paramiko, new connection each", times["fresh"]))
        stats("(backend, new job directory each)", times["new dir"])
        return medians

    async def queued_states(self, count: int) -> tuple[int, float]:
        print(f"\nstates of {count} held jobs")
        line = (f"for i in $(seq {count}); do sbatch --parsable --hold --time=1 "
                "--mem=100M --job-name=hpcgw-bench --output=/dev/null --wrap=true; done")
        t = time.perf_counter()
        queued = run(self.persistent, line).split()
        self.submitted += queued
        print(f"  submitted {len(queued)} held jobs in {time.perf_counter() - t:.1f} s "
              "(one remote shell loop)")
        rounds = []
        for _ in range(5):
            before = self.backend.transport.commands_run
            t = time.perf_counter()
            states = await self.backend.states(queued)
            rounds.append((time.perf_counter() - t, self.backend.transport.commands_run - before))
            assert len(states) == len(queued), f"{len(states)} states for {len(queued)} jobs"
        seconds = [s for s, _ in rounds]
        commands = max(c for _, c in rounds)
        print(f"  backend.states({len(queued)} ids): {commands} remote command(s), "
              f"median {statistics.median(seconds):.3f} s over 5 calls "
              f"(min {min(seconds):.3f}, max {max(seconds):.3f})")
        return commands, statistics.median(seconds)

    async def close(self) -> None:
        if self.submitted:
            run(self.persistent, "scancel " + " ".join(self.submitted))
        run(self.persistent, command_line(["rm", "-rf", "--", f"{self.alpha.work_root}/bench"]))
        self.persistent.close()
        await self.backend.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=60, help="submits per method (>= 50)")
    parser.add_argument("--queued", type=int, default=1000, help="held jobs for states()")
    args = parser.parse_args()
    bench = Bench(cluster_env())
    try:
        backend_ms, raw_ms, fresh_ms = await bench.submit_latency(args.n)
        commands, seconds = await bench.queued_states(args.queued)
    finally:
        await bench.close()
    checks = [
        (f"backend median / raw persistent median = {backend_ms / raw_ms:.2f} (floor <= 1.5)",
         backend_ms <= 1.5 * raw_ms),
        (f"backend median / new-connection median = {backend_ms / fresh_ms:.2f} (floor <= 0.2)",
         backend_ms <= 0.2 * fresh_ms),
        (f"{args.queued} states in {commands} command(s) (floor 1)", commands == 1),
        (f"{args.queued} states in {seconds:.3f} s (floor < 1 s)", seconds < 1.0),
    ]
    print()
    for text, ok in checks:
        print(f"  {'ok  ' if ok else 'MISS'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
