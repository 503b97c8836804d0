"""Jobs benchmark: the API and the tracker of a real `hpcgw serve` on the Slurm test cluster.

1. Submit latency: POST /api/v1/jobs (held jobs) against `hpcgw serve` with the test cluster's
   slurm_ssh backend, from Python's http.client on one keep-alive connection, interleaved
   round by round with its baseline, raw paramiko running the same `sbatch --parsable` line on
   one persistent connection with TCP_NODELAY (and, for information, the same POST from httpx).
   Floor: API median <= 2 x raw median.
2. GET /api/v1/jobs/{id} with a personal access token, from a separate load process (wrk), at
   50 and 500 connections, each load `--repeat` times, for each worker count asked (default 1
   and 2). Judged on the median run (by requests/s) at 500 clients of the best worker count.
   Floor at 500 clients: >= 1000 requests/s, p99 <= 250 ms, no error.
3. One tracker cycle over 1000+ live jobs (1000 held jobs sbatch'ed by one remote shell, stored
   as job rows with their quota holds, plus those of step 1): the first (records every pending
   reason), a steady one (nothing changed), and one after 100 of them were cancelled (squeue +
   sacct, 100 settlements). Floor: <= 2 remote commands per cycle; the steady one under 1 s.
Every job is held and cancelled at the end. Exit 1 if a floor is missed.

    .venv/bin/python bench/jobs.py [--steps submit reads tracker] [-n 60] [--seconds 15]
        [--repeat 3] [--workers 1 2]
        [--postgresql postgresql+psycopg://postgres@127.0.0.1:55432/postgres]

`--steps` runs only the steps named (default all three); reads without the submit step first
submit a few jobs, untimed, to have one to read.

Default: the embedded SQLite database in a temporary directory. With --postgresql (a maintenance
database URL) a database of its own is created on that server and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import paramiko
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scheduler import cluster_env, connect, stats  # noqa: E402
from bench.scheduler import run as remote  # noqa: E402
from consortium import tokens  # noqa: E402
from consortium.audit import CLI_CONTEXT  # noqa: E402
from consortium.authz import Scope  # noqa: E402
from consortium.base import utcnow  # noqa: E402
from consortium.models import (  # noqa: E402
    ClusterIdentity,
    Domain,
    Member,
    MemberKind,
    Membership,
    Project,
    Role,
    User,
)
from gateway import migrations  # noqa: E402
from gateway.auth.principal import principal_for_user  # noqa: E402
from gateway.db import Database  # noqa: E402
from gateway.jobs.clusters import Cluster  # noqa: E402
from gateway.jobs.models import Job, JobState  # noqa: E402
from gateway.jobs.schemas import ResourcesIn  # noqa: E402
from gateway.jobs.submission import marker_for, new_public_id  # noqa: E402
from gateway.jobs.tracker import ClusterTracker  # noqa: E402
from gateway.jobs.transitions import first_event  # noqa: E402
from gateway.logging import configure_logging  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from quotas import service as quotas  # noqa: E402
from quotas.models import AllocationKind  # noqa: E402
from quotas.rates import Amounts  # noqa: E402
from schedulers.models import JobSpec, Resources  # noqa: E402
from schedulers.slurm_ssh.commands import Sbatch  # noqa: E402
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler  # noqa: E402
from schedulers.slurm_ssh.transport import command_line  # noqa: E402

CONFIG = ROOT / "docs" / "examples" / "testcluster.toml"
LUA = Path(__file__).with_name("jobs_read.lua")
HPCGW = Path(sys.executable).with_name("hpcgw")
# The API refuses `#SBATCH --hold` (not on the directive allow-list): the submitted jobs run
# `true` and end at once; those still queued at the end are cancelled.
SCRIPT = "#!/bin/bash\ntrue\n"
RESOURCES = {"mem_mb": 100, "time_limit_minutes": 1}
WARMUP = 3
STEPS = ("submit", "reads", "tracker")
ENDED = 100  # queued jobs cancelled before the third tracker cycle
STARTUP_SECONDS = 180  # two workers importing the app on a loaded 2-CPU machine take ~45 s

SUBMIT_RATIO = 2.0
READ_RPS = 1000.0
READ_P99_MS = 250.0
CYCLE_COMMANDS = 2
CYCLE_SECONDS = 1.0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str:
    """wrk (Debian's package), installed when missing."""
    found = shutil.which("wrk")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        print("installing wrk (apt-get install wrk)")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       capture_output=True, timeout=600)
        found = shutil.which("wrk")
    if found is None:
        sys.exit("wrk is needed for the read load: apt-get install wrk (as root)")
    return found


@contextmanager
def database_url(tmp: Path, postgresql: str | None) -> Iterator[str]:
    """A new, migrated database: a SQLite file in `tmp`, or a database on that server."""
    if postgresql is None:
        url = f"sqlite:///{tmp / 'hpcgw.db'}"
        migrations.upgrade(url)
        yield url
        return
    admin = create_engine(postgresql, isolation_level="AUTOCOMMIT")
    name = f"hpcgw_bench_jobs_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(postgresql).set(database=name).render_as_string(hide_password=False)
        migrations.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Seeded:
    member_id: int
    project_id: int
    user_id: int
    token: str


def seed(database: Database, settings: Settings, env: dict[str, str]) -> Seeded:
    """A member with hpcm_alpha's account on the test cluster, a project, plenty of hours, a
    researcher and a personal access token of theirs (jobs:read, jobs:write)."""
    now = utcnow()
    cluster = settings.clusters[0].name
    with database.transaction() as session:
        member = Member(slug="bench", name="Bench SA", kind=MemberKind.company,
                        max_active_jobs=100_000)
        session.add(member)
        session.flush()
        user = User(email="bench@bench.test", email_normalized="bench@bench.test", name="bench")
        project = Project(member_id=member.id, slug="bench", name="Bench",
                          domain=Domain.research)
        session.add_all([
            ClusterIdentity(member_id=member.id, cluster=cluster, unix_user=env["ALPHA_USER"],
                            slurm_account=env["ALPHA_ACCOUNT"], ssh_key_ref="alpha"),
            user, project])
        session.flush()
        session.add(Membership(user_id=user.id, member_id=member.id, role=Role.researcher))
        session.flush()
        quotas.grant(session, member_id=member.id, amount_msu=10**12, kind=AllocationKind.grant,
                     starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30),
                     actor="bench")
        _, token = tokens.create_personal_token(
            session, principal_for_user(session, user), name="bench",
            scopes=[Scope.jobs_read, Scope.jobs_write], member_id=member.id,
            expires_at=now + timedelta(days=1), now=now, context=CLI_CONTEXT)
        return Seeded(member.id, project.id, user.id, token)


class Gateway:
    """`hpcgw serve` as its own process (the access log on, as deployed)."""

    def __init__(self, workers: int, log: Path) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gateway:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(HPCGW), "serve", "--port", str(self.port), "--workers", str(self.workers)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"hpcgw serve exited: see {self.log}\n{self.log.read_text()[-2000:]}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        self.__exit__()
        sys.exit(f"hpcgw serve did not answer within {STARTUP_SECONDS} s:\n"
                 f"{self.log.read_text()[-2000:]}")

    def __exit__(self, *_: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def errors_logged(self) -> int:
        return sum('"level": "error"' in line for line in self.log.read_text().splitlines())


# --- 1. submit latency ------------------------------------------------------------------------

@dataclass
class Jobs:
    """What the benchmark put on the cluster (all cancelled at the end)."""

    slurm_ids: list[str] = field(default_factory=list)
    api_job: str = ""  # the job the reads read


def submit_body(seeded: Seeded, env: dict[str, str]) -> dict[str, object]:
    return {"project": seeded.project_id, "name": "bench", "script": SCRIPT,
            "resources": {"partition": env["DEFAULT_PARTITION"], **RESOURCES}}


def submit_one(client: httpx.Client, body: dict[str, object], jobs: Jobs) -> str:
    """POST one job (201 expected): its Slurm id; the job becomes the one the reads read."""
    answer = client.post("/api/v1/jobs", json=body)
    return accepted(answer.status_code, answer.content, jobs)


def submit_untimed(gateway: Gateway, seeded: Seeded, env: dict[str, str], jobs: Jobs,
                   count: int = WARMUP) -> None:
    """A few jobs for the reads when step 1 does not run."""
    headers = {"Authorization": f"Bearer {seeded.token}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as client:
        for _ in range(count):
            jobs.slurm_ids.append(submit_one(client, submit_body(seeded, env), jobs))


def raw_sbatch(ssh: paramiko.SSHClient, env: dict[str, str]) -> str:
    """The baseline of a submission: the same `sbatch --parsable` line a researcher would run,
    the script on stdin, over `ssh`; its Slurm id."""
    public_id = new_public_id()
    spec = JobSpec(marker=marker_for("raw", public_id), name="bench", script=SCRIPT,
                   account=env["ALPHA_ACCOUNT"],
                   resources=Resources(partition=env["DEFAULT_PARTITION"], **RESOURCES),
                   stdout=f"hpcgw-{public_id}.out", stderr=f"hpcgw-{public_id}.err")
    sbatch = Sbatch(spec, env["WORK_ROOT"].format(unix_user=env["ALPHA_USER"]))
    return remote(ssh, command_line(sbatch.argv()), sbatch.stdin()).strip()


def submit_latency(gateway: Gateway, seeded: Seeded, ssh: paramiko.SSHClient, *,
                   env: dict[str, str], n: int, jobs: Jobs) -> tuple[float, float]:
    body = submit_body(seeded, env)

    def raw() -> str:
        return raw_sbatch(ssh, env)

    payload = json.dumps(body).encode()
    post_headers = {"Authorization": f"Bearer {seeded.token}",
                    "Content-Type": "application/json"}

    def api() -> str:
        connection.request("POST", "/api/v1/jobs", payload, post_headers)
        answer = connection.getresponse()
        return accepted(answer.status, answer.read(), jobs)

    def api_httpx() -> str:
        answer = client.post("/api/v1/jobs", content=payload, headers=post_headers)
        return accepted(answer.status_code, answer.content, jobs)

    print(f"1. submit latency: {n} submits each, interleaved (after {WARMUP} untimed rounds), "
          f"load average {loadavg()}")
    kinds = (("api", api), ("raw", raw), ("httpx", api_httpx))
    times: dict[str, list[float]] = {name: [] for name, _ in kinds}
    # the API's client: Python's http.client on one keep-alive connection with TCP_NODELAY,
    # as light as the raw side's paramiko; httpx (heavier per request) for information
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with contextlib.closing(connection), httpx.Client(base_url=gateway.url, timeout=60) as client:
        for i in range(n + WARMUP):
            for name, fn in kinds[i % 3:] + kinds[:i % 3]:  # each kind first in turn
                started = time.perf_counter()
                jobs.slurm_ids.append(fn())
                if i >= WARMUP:
                    times[name].append(time.perf_counter() - started)
    api_ms = stats("POST /api/v1/jobs (hpcgw serve)", times["api"])
    raw_ms = stats("raw paramiko sbatch, persistent", times["raw"])
    httpx_ms = stats("(the same POST from httpx)", times["httpx"])
    print(f"  API - raw (median): {api_ms - raw_ms:+.1f} ms; httpx's own cost: "
          f"{httpx_ms - api_ms:+.1f} ms")
    return api_ms, raw_ms


def accepted(status: int, text: bytes, jobs: Jobs) -> str:
    """The Slurm id of a 201 answer to POST /api/v1/jobs; its job becomes the one the reads
    read."""
    if status != 201:
        sys.exit(f"POST /api/v1/jobs answered {status}: {text.decode()}")
    job = json.loads(text)
    jobs.api_job = job["id"]
    return str(job["scheduler_id"])


# --- 2. reads ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    workers: int
    clients: int
    requests: int
    seconds: float
    p50: float
    p90: float
    p99: float
    max: float
    socket_errors: int
    non_2xx: int
    loadavg: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx

    def show(self) -> None:
        print(f"  workers={self.workers} c={self.clients:<4} {self.rps:7.0f} req/s  "
              f"p50 {self.p50:6.1f} ms  p90 {self.p90:6.1f}  p99 {self.p99:6.1f}  "
              f"max {self.max:6.1f}  errors {self.errors} (non-2xx {self.non_2xx})  "
              f"n={self.requests}  load {self.loadavg}")


def wrk(url: str, token: str, workers: int, clients: int, seconds: int) -> Load:
    done = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url],
        env={**os.environ, "HPCGW_BENCH_TOKEN": token}, capture_output=True, text=True,
        timeout=seconds + 60, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("BENCH-JSON "))
    f = json.loads(line.removeprefix("BENCH-JSON "))
    return Load(workers=workers, clients=clients, requests=f["requests"],
                seconds=f["duration_us"] / 1e6, p50=f["p50"] / 1000, p90=f["p90"] / 1000,
                p99=f["p99"] / 1000, max=f["max"] / 1000,
                socket_errors=f["connect"] + f["read"] + f["write"] + f["timeout"],
                non_2xx=f["status"], loadavg=loadavg())


def read_load(gateway: Gateway, token: str, job_id: str, seconds: int,
              repeat: int) -> list[Load]:
    url = f"{gateway.url}/api/v1/jobs/{job_id}"
    answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["id"] == job_id, answer.text
    wrk(url, token, gateway.workers, 50, 2)  # warm-up, untimed
    loads = []
    for clients in (50, 500):
        for _ in range(repeat):
            time.sleep(2)
            loads.append(wrk(url, token, gateway.workers, clients, seconds))
            loads[-1].show()
    return loads


def median_run(loads: list[Load]) -> Load:
    """The run with the median requests/s (the lower middle one of an even count)."""
    ranked = sorted(loads, key=lambda load: load.rps)
    return ranked[(len(ranked) - 1) // 2]


# --- 3. the tracker ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Cycle:
    name: str
    tracked: int
    commands: int
    squeue: int
    sacct: int
    seconds: float
    changes: int

    def show(self) -> None:
        print(f"  {self.name:<34} {self.tracked} live jobs  {self.commands} remote command(s) "
              f"(squeue {self.squeue}, sacct {self.sacct})  {self.seconds:.3f} s  "
              f"{self.changes} state change(s)")


def queue_held_jobs(ssh: paramiko.SSHClient, env: dict[str, str], count: int) -> list[str]:
    """`count` held jobs, sbatch'ed by four remote shell loops at once."""
    per_loop = -(-count // 4)
    one = (f"sbatch --parsable --hold --time=1 --mem=100M --job-name=hpcgw-bench "
           f"--account={env['ALPHA_ACCOUNT']} --output=/dev/null --wrap=true")
    loops = " ".join(f"(for i in $(seq {min(per_loop, count - k * per_loop)}); do {one}; done) &"
                     for k in range(4) if count - k * per_loop > 0)
    return remote(ssh, f"{loops} wait").split()


def store_jobs(database: Database, settings: Settings, seeded: Seeded,
               slurm_ids: list[str]) -> None:
    """Job rows as a submission leaves them (pending, with the Slurm id) and their holds."""
    cluster = settings.clusters[0]
    partition = cluster.partitions[0]
    resources = ResourcesIn(partition=partition.name, **RESOURCES)
    amounts = Amounts(gpus=0, cpus=resources.cpus, mem_mb=resources.mem_mb)
    seconds = resources.time_limit_minutes * 60
    now = utcnow()
    with database.transaction() as session:
        for slurm_id in slurm_ids:
            public_id = new_public_id()
            job = Job(public_id=public_id, member_id=seeded.member_id,
                      project_id=seeded.project_id, user_id=seeded.user_id,
                      cluster=cluster.name, name="bench", state=JobState.pending,
                      marker=marker_for(cluster.name, public_id), scheduler_id=slurm_id,
                      partition=partition.name, resources=resources.model_dump(), script=SCRIPT,
                      stdout_path=f"hpcgw-{public_id}.out", stderr_path=f"hpcgw-{public_id}.err",
                      billing=partition.billing.model_dump(), submitted_at=now,
                      quote_msu=quotas.quote(partition.billing, amounts, seconds))
            session.add(job)
            session.flush()
            first_event(session, job)
            quotas.hold(session, quotas.JobRef(job_id=public_id, member_id=seeded.member_id,
                                               project_id=seeded.project_id,
                                               user_id=seeded.user_id, cluster=cluster.name,
                                               partition=partition.name),
                        partition.billing, amounts, seconds, now=now)


async def tracker_cycles(database: Database, settings: Settings, seeded: Seeded, *,
                         ssh: paramiko.SSHClient, env: dict[str, str], count: int,
                         jobs: Jobs) -> list[Cycle]:
    print(f"\n3. tracker cycles; load average {loadavg()}")
    started = time.perf_counter()
    queued = queue_held_jobs(ssh, env, count)
    jobs.slurm_ids += queued
    print(f"  sbatch'ed {len(queued)} held jobs in {time.perf_counter() - started:.1f} s "
          "(remote shell loops)")
    started = time.perf_counter()
    await asyncio.to_thread(store_jobs, database, settings, seeded, queued)
    print(f"  stored them as job rows with their holds in {time.perf_counter() - started:.1f} s")

    config = settings.clusters[0]
    scheduler = SlurmSshScheduler(config)
    tracker = ClusterTracker(database, Cluster(config, scheduler), settings.jobs,
                             holder="bench")

    async def cycle(name: str) -> Cycle:
        before = scheduler.transport.commands_run
        started = time.perf_counter()
        report = await tracker.cycle()
        seconds = time.perf_counter() - started
        assert report.leader and report.failures == 0, report
        done = Cycle(name, report.tracked, scheduler.transport.commands_run - before,
                     report.states_calls, report.accounting_calls, seconds, len(report.changes))
        done.show()
        return done

    try:
        cycles = [await cycle("first (records pending reasons)"),
                  await cycle("steady (nothing changed)")]
        remote(ssh, "scancel " + " ".join(queued[:ENDED]))
        await asyncio.sleep(2)  # slurmdbd records the cancellations
        cycles.append(await cycle(f"{ENDED} ended (squeue + sacct)"))
    finally:
        await scheduler.close()
    return cycles


# --- the run ----------------------------------------------------------------------------------

def check(text: str, ok: bool) -> bool:
    print(f"  {'ok  ' if ok else 'MISS'} {text}")
    return ok


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="the steps to run (default all three)")
    parser.add_argument("-n", type=int, default=60, help="submits of each kind (>= 50)")
    parser.add_argument("--seconds", type=int, default=15, help="length of each read load")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each read load (judged on the median run)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3],
                        help="worker counts of `hpcgw serve` to try for the reads")
    parser.add_argument("--queued", type=int, default=1000, help="held jobs for the tracker")
    parser.add_argument("--postgresql", metavar="URL",
                        help="a PostgreSQL maintenance database URL instead of SQLite")
    return parser.parse_args()


def floors(submit: tuple[float, float] | None, loads: list[Load], cycles: list[Cycle],
           args: argparse.Namespace) -> bool:
    """Print each floor of the steps that ran: all met?"""
    print(f"\nfloors; load average {loadavg()}")
    results = []
    if submit is not None:
        api_ms, raw_ms = submit
        results.append(check(f"submit: API median / raw median = {api_ms / raw_ms:.2f} "
                             f"(floor <= {SUBMIT_RATIO}; {api_ms:.1f} / {raw_ms:.1f} ms)",
                             api_ms <= SUBMIT_RATIO * raw_ms))
    if loads:
        medians = [median_run([load for load in loads
                               if load.clients == 500 and load.workers == workers])
                   for workers in args.workers]
        best = max(medians, key=lambda load: load.rps)
        print(f"  (reads judged on the median of {args.repeat} run(s) at 500 clients, best "
              f"worker count: {best.workers})")
        results += [
            check(f"reads at 500 clients: {best.rps:.0f} req/s = {best.rps / READ_RPS:.2f} x "
                  f"the floor of {READ_RPS:.0f}", best.rps >= READ_RPS),
            check(f"reads at 500 clients: p99 {best.p99:.1f} ms = "
                  f"{best.p99 / READ_P99_MS:.2f} x the floor of {READ_P99_MS:.0f} ms",
                  best.p99 <= READ_P99_MS),
            check(f"reads: {sum(load.errors for load in loads)} errors over all loads "
                  "(floor 0)", all(load.errors == 0 for load in loads)),
        ]
    if cycles:
        steady = cycles[1]
        results += [check(f"tracker, {c.name}: {c.commands} remote command(s) "
                          f"(floor <= {CYCLE_COMMANDS})", c.commands <= CYCLE_COMMANDS)
                    for c in cycles]
        results.append(check(f"tracker, steady cycle over {steady.tracked} live jobs: "
                             f"{steady.seconds:.3f} s = {steady.seconds / CYCLE_SECONDS:.2f} x "
                             f"the floor of {CYCLE_SECONDS:.0f} s",
                             steady.seconds < CYCLE_SECONDS))
    return all(results)


def main() -> int:
    args = arguments()
    steps = set(args.steps)
    configure_logging("WARNING", json=False)  # the tracker of step 3 logs every change it makes
    if "reads" in steps:
        ensure_wrk()
    env = cluster_env()
    print(f"hpcgw jobs benchmark: {os.cpu_count()} CPUs, load average {loadavg()}, database "
          f"{'PostgreSQL' if args.postgresql else 'SQLite'}, steps {' '.join(sorted(steps))}")

    submit: tuple[float, float] | None = None
    loads: list[Load] = []
    cycles: list[Cycle] = []
    with tempfile.TemporaryDirectory(prefix="hpcgw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with database_url(tmp, args.postgresql) as url:
            os.environ.update({
                "HPCGW_CONFIG": str(CONFIG), "HPCGW_DATABASE_URL": url,
                "HPCGW_DATA_DIR": str(tmp), "HPCGW_SECRET_KEY": secrets.token_urlsafe(48),
                # the tracker runs in this process (step 3), not beside the reads
                "HPCGW_JOBS__TRACKER_IN_SERVE": "false",
            })
            settings = Settings()
            database = Database(url)
            seeded = seed(database, settings, env)
            ssh = connect(env, env["ALPHA_USER"], env["ALPHA_KEY"])
            jobs = Jobs()
            served = args.workers if "reads" in steps else args.workers[:1]
            try:
                for i, workers in enumerate(served if steps - {"tracker"} else []):
                    with Gateway(workers, tmp / f"serve-{workers}.log") as gateway:
                        if i == 0 and "submit" in steps:
                            submit = submit_latency(gateway, seeded, ssh, env=env, n=args.n,
                                                    jobs=jobs)
                        if "reads" not in steps:
                            continue
                        if i == 0:
                            if not jobs.api_job:
                                submit_untimed(gateway, seeded, env, jobs)
                            print(f"\n2. GET /api/v1/jobs/{{id}}, wrk -t2, {args.seconds} s "
                                  f"per load, {args.repeat} run(s) each, personal access token")
                        loads += read_load(gateway, seeded.token, jobs.api_job, args.seconds,
                                           args.repeat)
                    logged = gateway.errors_logged()
                    if logged:
                        print(f"  ({logged} error lines in the log of hpcgw serve)")
                if "tracker" in steps:
                    cycles = asyncio.run(tracker_cycles(database, settings, seeded, ssh=ssh,
                                                        env=env, count=args.queued, jobs=jobs))
            finally:
                for start in range(0, len(jobs.slurm_ids), 500):
                    remote(ssh, "scancel " + " ".join(jobs.slurm_ids[start:start + 500]))
                ssh.close()
                database.dispose()

    return 0 if floors(submit, loads, cycles, args) else 1


if __name__ == "__main__":
    sys.exit(main())
