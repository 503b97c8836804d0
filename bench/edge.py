"""Edge benchmark: the figures of the job domain's edge (issue 10) in one run, each beside its
baseline measured in the same run, on SQLite and on a PostgreSQL server configured as
production runs it, written as a Markdown report.

Per database, one `hpcgw serve --workers 2` on the Slurm test cluster (slurm_ssh; the jobs run
`true`, those still queued are cancelled at the end), as bench/jobs.py starts it:

1. submit latency: POST /api/v1/jobs on one keep-alive connection, interleaved with its
   baseline, the plain `sbatch` over one persistent SSH connection (bench/jobs.py, step 1);
2. a burst of 16 concurrent clients: the gateway's CPU time (every process of it) per accepted
   submission, its jobs/s and each submission's latency, beside raw `sbatch` over as many SSH
   connections as the gateway's pool (`pool_size` of the cluster x workers), the same number
   of jobs;
3. GET /api/v1/jobs/{id} from wrk, 500 keep-alive connections, without and with
   If-None-Match (the job's ETag; "missing" when the answer carries none);
4. GET /api/v1/jobs?limit=50 from wrk, 50 connections;
5. the RSS of each process of the gateway after all of it.

The PostgreSQL server is the run's own (initdb in a temporary directory, as the `postgres`
user when run as root): fsync, synchronous_commit and full_page_writes on, as in production;
the shared test server runs with them off. Exit 1 if a floor is missed.

    .venv/bin/python bench/edge.py [--report bench/REPORT.md] [--databases sqlite postgresql]
        [-n 60] [--burst 8] [--seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.jobs import (  # noqa: E402
    CONFIG,
    STARTUP_SECONDS,
    Gateway,
    Jobs,
    Load,
    Seeded,
    accepted,
    database_url,
    ensure_wrk,
    free_port,
    loadavg,
    raw_sbatch,
    seed,
    submit_body,
    submit_latency,
    wrk,
)
from bench.scheduler import cluster_env, connect  # noqa: E402
from bench.scheduler import run as remote  # noqa: E402
from gateway.db import Database  # noqa: E402
from gateway.settings import Settings  # noqa: E402

WORKERS = 2
WORKER_COMMAND = "-m gateway.api.worker"  # how gateway.cli.workers starts each worker
READ_CLIENTS = 500
LIST_CLIENTS = 50
BURST_CLIENTS = 16
# the floors of issue 10
READ_RPS, READ_304_RPS, LIST_RPS, P99_MS = 4000.0, 5000.0, 600.0, 250.0
SUBMIT_RATIO, CPU_MS_PER_SUBMIT, THROUGHPUT_RATIO, RSS_MIB = 2.0, 10.0, 0.5, 150.0
VERDICT = {True: "ok", False: "MISSED", None: "-"}


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    baseline: str
    floor: str
    ok: bool | None  # None: not measured


# --- the gateway's processes -----------------------------------------------------------------

def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [0] is field 3 (state), [1] the parent."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (the workers of `hpcgw serve`)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def cpu_seconds(root: int) -> float:
    """User and system time of the process tree, with that of the children each one has
    reaped (utime, stime, cutime, cstime: fields 14 to 17); a process gone meanwhile counts in
    its parent's."""
    ticks = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            ticks += sum(int(field) for field in _stat(pid)[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def rss_row(pid: int) -> list[Row]:
    """The resident memory of one process of the gateway (none once it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        kind = "worker" if WORKER_COMMAND in cmdline(pid) else "helper process"
    except OSError:
        return []
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    rss = int(kib) / 1024
    return [Row(f"RSS of {kind} {pid} after the run", f"{rss:.0f} MiB", "",
                f"<= {RSS_MIB:g} MiB", rss <= RSS_MIB)]


# --- PostgreSQL as production runs it ----------------------------------------------------------

@contextmanager
def durable_postgresql(tmp: Path) -> Iterator[str]:
    """A PostgreSQL server of this run's own in `tmp`, durable (fsync, synchronous_commit,
    full_page_writes on); its maintenance database's URL."""
    bindir = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda d: int(d.parent.name))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, sockets = tmp / "pgdata", tmp / "pgrun"
    tmp.chmod(0o711)  # the postgres user reaches its directories
    for directory in (data, sockets):
        directory.mkdir(mode=0o700)
        if as_postgres:
            shutil.chown(directory, "postgres", "postgres")
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"],
                   check=True, capture_output=True)
    port = free_port()
    pg_ctl = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
    subprocess.run([*pg_ctl, "-l", str(data / "server.log"), "start", "-o",
                    f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=on "
                    "-c synchronous_commit=on -c full_page_writes=on -c max_connections=200"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], check=False, capture_output=True)


def durability(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return ", ".join(f"{name}={conn.execute(text(f'SHOW {name}')).scalar_one()}"
                             for name in ("fsync", "synchronous_commit", "full_page_writes"))
    finally:
        engine.dispose()


# --- the figures -------------------------------------------------------------------------------

def burst(gateway: Gateway, seeded: Seeded, env: dict[str, str], jobs: Jobs, *,
          per_client: int, connections: int) -> list[Row]:
    """16 clients submitting at once, then raw sbatch over `connections` SSH connections, the
    same number of jobs."""
    total = BURST_CLIENTS * per_client
    payload = json.dumps(submit_body(seeded, env)).encode()
    headers = {"Authorization": f"Bearer {seeded.token}", "Content-Type": "application/json"}
    waits: dict[str, list[float]] = {"api": [], "raw": []}  # each submission's, in seconds

    def api_client(_: int) -> list[str]:
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=120)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.closing(connection):
            ids = []
            for _ in range(per_client):
                started = time.perf_counter()
                connection.request("POST", "/api/v1/jobs", payload, headers)
                answer = connection.getresponse()
                ids.append(accepted(answer.status, answer.read(), jobs))
                waits["api"].append(time.perf_counter() - started)
            return ids

    ssh = [connect(env, env["ALPHA_USER"], env["ALPHA_KEY"]) for _ in range(connections)]

    def raw_client(k: int) -> list[str]:
        ids = []
        for _ in range(k, total, connections):
            started = time.perf_counter()
            ids.append(raw_sbatch(ssh[k], env))
            waits["raw"].append(time.perf_counter() - started)
        return ids

    def timed(fn: Callable[[int], list[str]], workers: int) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            for ids in pool.map(fn, range(workers)):
                jobs.slurm_ids += ids
        return time.perf_counter() - started

    try:
        assert gateway.process is not None
        cpu = cpu_seconds(gateway.process.pid)
        api_seconds = timed(api_client, BURST_CLIENTS)
        cpu_ms = (cpu_seconds(gateway.process.pid) - cpu) * 1000 / total
        raw_seconds = timed(raw_client, connections)
    finally:
        for client in ssh:
            client.close()
    api_rate, raw_rate = total / api_seconds, total / raw_seconds
    print(f"  burst: {total} jobs, API {api_rate:.1f} jobs/s ({cpu_ms:.1f} ms CPU each), raw "
          f"sbatch over {connections} connections {raw_rate:.1f} jobs/s")
    return [
        Row(f"gateway CPU per accepted submission ({BURST_CLIENTS} clients, {total} jobs)",
            f"{cpu_ms:.1f} ms", "", f"<= {CPU_MS_PER_SUBMIT:g} ms", cpu_ms <= CPU_MS_PER_SUBMIT),
        Row(f"jobs/s, {BURST_CLIENTS} concurrent clients", f"{api_rate:.1f}",
            f"raw sbatch, {connections} SSH connections: {raw_rate:.1f} "
            f"(ratio {api_rate / raw_rate:.2f})", f"ratio >= {THROUGHPUT_RATIO}",
            api_rate >= THROUGHPUT_RATIO * raw_rate),
        Row(f"submit latency in the burst ({BURST_CLIENTS} clients), median / p99 / max",
            spread(waits["api"]),
            f"raw sbatch, {connections} SSH connections: {spread(waits['raw'])}", "-", None),
    ]


def spread(seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    return (f"{statistics.median(ms):.0f} / {ms[min(len(ms) - 1, int(0.99 * len(ms)))]:.0f} / "
            f"{ms[-1]:.0f} ms")


def load_row(figure: str, load: Load, rps_floor: float, split: str) -> Row:
    return Row(figure, f"{load.rps:.0f} req/s, p99 {load.p99:.1f} ms, {load.errors} errors; "
               f"workers' CPU {split}", "",
               f">= {rps_floor:g} req/s, p99 <= {P99_MS:g} ms, 0 errors",
               load.rps >= rps_floor and load.p99 <= P99_MS and load.errors == 0)


def split_load(gateway: Gateway, load: Callable[[], Load]) -> tuple[Load, str]:
    """A wrk load and each worker's share of the workers' CPU during it (`52%/48%`): the kernel
    spreads connections across the workers' sockets (gateway.cli.workers), by a hash of their
    addresses, so a share far from even says one worker served most of the load."""
    assert gateway.process is not None
    workers = [pid for pid in process_tree(gateway.process.pid)[1:]
               if WORKER_COMMAND in cmdline(pid)]

    def ticks() -> list[int]:  # user and system time (fields 14 and 15)
        return [sum(int(field) for field in _stat(pid)[11:13]) for pid in workers]

    before = ticks()
    done = load()
    used = [after - start for after, start in zip(ticks(), before, strict=True)]
    total = sum(used) or 1
    split = "/".join(f"{100 * u / total:.0f}%" for u in used)
    print(f"  workers' CPU: {split}")
    return done, split


def reads(gateway: Gateway, seeded: Seeded, job_id: str, seconds: int) -> list[Row]:
    url = f"{gateway.url}/api/v1/jobs/{job_id}"
    auth = {"Authorization": f"Bearer {seeded.token}"}
    first = httpx.get(url, headers=auth, timeout=10)
    assert first.status_code == 200 and first.json()["id"] == job_id, first.text
    wrk(url, seeded.token, WORKERS, 50, 2)  # warm-up, untimed
    plain, split = split_load(gateway, lambda: wrk(url, seeded.token, WORKERS, READ_CLIENTS,
                                                   seconds))
    plain.show()
    rows = [load_row(f"GET /api/v1/jobs/{{id}}, {READ_CLIENTS} clients", plain, READ_RPS,
                     split)]
    figure = f"the same with If-None-Match, {READ_CLIENTS} clients"
    etag = first.headers.get("etag")
    again = httpx.get(url, headers={**auth, "If-None-Match": etag or '"none"'}, timeout=10)
    if etag is None or again.status_code != 304:
        rows.append(Row(figure, f"missing (ETag {etag}, answer {again.status_code})", "",
                        f">= {READ_304_RPS:g} req/s", None))
    else:
        os.environ["HPCGW_BENCH_IF_NONE_MATCH"] = etag
        try:
            matched, split = split_load(gateway, lambda: wrk(
                url, seeded.token, WORKERS, READ_CLIENTS, seconds))
        finally:
            del os.environ["HPCGW_BENCH_IF_NONE_MATCH"]
        matched.show()
        rows.append(load_row(figure, matched, READ_304_RPS, split))
    listed, split = split_load(gateway, lambda: wrk(
        f"{gateway.url}/api/v1/jobs?limit=50", seeded.token, WORKERS, LIST_CLIENTS, seconds))
    listed.show()
    rows.append(load_row(f"GET /api/v1/jobs?limit=50, {LIST_CLIENTS} clients", listed,
                         LIST_RPS, split))
    return rows


def all_workers_started(gateway: Gateway) -> None:
    """/healthz answers once the first worker is up: wait for the others."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while gateway.log.read_text().count("Application startup complete") < WORKERS:
        if time.monotonic() > deadline:
            sys.exit(f"not all {WORKERS} workers of hpcgw serve started: see {gateway.log}")
        time.sleep(0.5)


def run_database(name: str, url: str, tmp: Path, env: dict[str, str],
                 args: argparse.Namespace) -> tuple[str, list[Row]]:
    """Every figure against one database: (what the database was, the rows)."""
    os.environ.update({
        "HPCGW_CONFIG": str(CONFIG), "HPCGW_DATABASE_URL": url, "HPCGW_DATA_DIR": str(tmp),
        "HPCGW_SECRET_KEY": secrets.token_urlsafe(48), "HPCGW_JOBS__TRACKER_IN_SERVE": "false",
    })
    settings = Settings()
    database = Database(url)
    seeded = seed(database, settings, env)
    ssh = connect(env, env["ALPHA_USER"], env["ALPHA_KEY"])
    jobs = Jobs()
    connections = settings.clusters[0].pool_size * WORKERS
    described = name if url.startswith("sqlite") else f"{name} ({durability(url)})"
    print(f"\n== {described}; load average {loadavg()}")
    try:
        with Gateway(WORKERS, tmp / "serve.log") as gateway:
            all_workers_started(gateway)
            api_ms, raw_ms = submit_latency(gateway, seeded, ssh, env=env, n=args.n, jobs=jobs)
            rows = [Row("submit latency, median (one keep-alive client)", f"{api_ms:.1f} ms",
                        f"plain sbatch, one persistent SSH connection: {raw_ms:.1f} ms "
                        f"(ratio {api_ms / raw_ms:.2f})", f"ratio <= {SUBMIT_RATIO:g}",
                        api_ms <= SUBMIT_RATIO * raw_ms)]
            rows += burst(gateway, seeded, env, jobs, per_client=args.burst,
                          connections=connections)
            rows += reads(gateway, seeded, jobs.api_job, args.seconds)
            assert gateway.process is not None
            for pid in process_tree(gateway.process.pid)[1:]:
                rows += rss_row(pid)
        logged = gateway.errors_logged()
        if logged:
            described += f"; {logged} error lines in the log of hpcgw serve"
    finally:
        for start in range(0, len(jobs.slurm_ids), 500):
            remote(ssh, "scancel " + " ".join(jobs.slurm_ids[start:start + 500]))
        ssh.close()
        database.dispose()
    return described, rows


def host_speed() -> float:
    """CPU milliseconds of a fixed pure-Python loop (median of 5): the figures without a
    baseline (CPU per submission, req/s) move with the host, which on a shared VM changes
    from hour to hour; this says by how much between two reports."""
    times = []
    for _ in range(5):
        started = time.process_time()
        sum(i * i for i in range(1_000_000))
        times.append(1000 * (time.process_time() - started))
    return statistics.median(times)


def report(sections: list[tuple[str, list[Row]]], started: datetime, speeds: list[float],
           args: argparse.Namespace) -> str:
    lines = [
        "# Edge benchmark (bench/edge.py)", "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average {loadavg()} at "
        f"the end; `hpcgw serve --workers {WORKERS}` on the Slurm test cluster (slurm_ssh), "
        f"jobs running `true`; `-n {args.n} --burst {args.burst} --seconds {args.seconds}`. "
        f"Host speed (`host_speed()`, CPU ms of a fixed Python loop, lower is faster): "
        f"{speeds[0]:.0f} at the start, {speeds[-1]:.0f} at the end.", "",
    ]
    for described, rows in sections:
        lines += [f"## {described}", "",
                  "| figure | measured | baseline, same run | floor | |", "|---|---|---|---|---|"]
        lines += [f"| {r.figure} | {r.measured} | {r.baseline or '-'} | {r.floor} | "
                  f"{VERDICT[r.ok]} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "REPORT.md")
    parser.add_argument("--databases", nargs="+", choices=("sqlite", "postgresql"),
                        default=["sqlite", "postgresql"])
    parser.add_argument("-n", type=int, default=60, help="interleaved submits of each kind")
    parser.add_argument("--burst", type=int, default=8, help="submits per burst client")
    parser.add_argument("--seconds", type=int, default=15, help="length of each wrk load")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    ensure_wrk()
    env = cluster_env()
    started, speeds = datetime.now(UTC), [host_speed()]
    sections = []
    for name in args.databases:
        with tempfile.TemporaryDirectory(prefix="hpcgw-edge-") as tmp_name:
            tmp = Path(tmp_name)
            if name == "sqlite":
                with database_url(tmp, None) as url:
                    sections.append(run_database("SQLite", url, tmp, env, args))
            else:
                with durable_postgresql(tmp) as server, database_url(tmp, server) as url:
                    sections.append(run_database("PostgreSQL", url, tmp, env, args))
    speeds.append(host_speed())
    args.report.write_text(report(sections, started, speeds, args))
    print(f"\nreport: {args.report}")
    return 0 if all(r.ok is not False for _, rows in sections for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
