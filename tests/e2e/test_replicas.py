"""Two replicas of the gateway on one PostgreSQL and the test cluster, under mixed load
(submissions, reads, cancels from threads): one tracker per cluster, no state change recorded
twice, no overspend in a race across replicas, the tracker taken over within the lease when its
replica is killed, and no accepted job lost when PostgreSQL restarts mid-load.

The PostgreSQL is this test's own (initdb in a temporary directory, its own port, fsync on): it
is restarted here, which the suite's shared server must never be. `-s` prints the figures."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from e2e_helpers import World, make_world, script_job, wait_for
from factories import auth_headers
from gateway_processes import GatewayProcess
from server_process import free_port
from sqlalchemy import create_engine, func, select, text

from gateway import migrations
from gateway.db import Database
from gateway.jobs.models import Job, JobEvent, JobState, TrackerLease
from gateway.settings import Settings
from quotas import ledger
from quotas import service as quotas
from quotas.models import Allocation

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"
LEASE_SECONDS = 4.0
RACE_FITS = 6  # jobs the raced allocation holds, exactly
LOAD_SECONDS = 14.0
ACCEPTED = (201, 202)
IN_DOUBT = frozenset({JobState.accepted, JobState.submitting, JobState.unknown})


class PrivatePostgres:
    """A PostgreSQL server of this test: initdb in a temporary directory (owned by the
    `postgres` user when run as root, which initdb refuses to be), fsync and synchronous commit
    on, loopback only, on a free port."""

    def __init__(self) -> None:
        self.bindir = max(Path("/usr/lib/postgresql").glob("*/bin"),
                          key=lambda p: int(p.parent.name))
        self.root = Path(tempfile.mkdtemp(prefix="hpcgw-replicas-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/hpcgw"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8")

    def _run(self, tool: str, *args: str) -> None:
        runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*runner, str(self.bindir / tool), *args], capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{tool}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60",
                  "-l", str(self.root / "server.log"), "start", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  "-c max_connections=200 -c fsync=on -c synchronous_commit=on")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "stop", "-m", mode)

    def create_database(self) -> None:
        engine = create_engine(self.url.replace("/hpcgw", "/postgres"),
                               isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("CREATE DATABASE hpcgw"))
        engine.dispose()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            server.remove()


@dataclass
class Load:
    """What the load threads saw: every answer by status, the accepted jobs' ids."""

    answers: Counter[str] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    reads: int = 0
    cancels: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, status: int | str) -> None:
        with self.lock:
            self.answers[f"{kind} {status}"] += 1


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
    try:
        return client.request(method, path, **kwargs)
    except httpx.TransportError:
        return None  # the replica was killed, or its database is restarting


def _lease(database: Database) -> tuple[str, float] | None:
    """The holder of the cluster's tracker lease and the seconds it has left."""
    with database.session() as session:
        row = session.execute(select(TrackerLease.holder, TrackerLease.expires_at)).first()
        now = session.execute(select(func.now())).scalar_one()
    return None if row is None else (row[0], (row[1] - now).total_seconds())


def _pid(holder: str) -> int:
    return int(holder.split(":")[1])  # gateway.holders: host:pid:random


def test_two_replicas_under_load(*, settings: Settings, testcluster: Cluster,
                                 tmp_path: Path) -> None:
    started = time.monotonic()
    with ExitStack() as stack:
        pg = stack.enter_context(private_postgres())
        migrations.upgrade(pg.url, "head")
        database = Database(pg.url)
        stack.callback(database.dispose)
        world = make_world(database, testcluster)
        alice, bob = auth_headers(settings, world.alice), auth_headers(settings, world.bob)
        replicas = [GatewayProcess(settings, database, tmp_path / f"replica{i}.log",
                                   tracker_lease_seconds=LEASE_SECONDS,
                                   tracker_interval_seconds=0.5, submit_grace_seconds=5.0,
                                   marker_grace_seconds=10.0)
                    for i in (1, 2)]
        for replica in replicas:
            stack.enter_context(replica.running())
        setup = time.monotonic() - started

        # --- the race: bob's allocation holds RACE_FITS jobs, both replicas are asked twice that
        accepted_race = _race(replicas, database, world, bob)
        assert len(accepted_race) == RACE_FITS
        with database.session() as session:
            bobs = session.scalars(select(Allocation)
                                   .where(Allocation.member_id == world.beta.id)).one()
            assert bobs.held_msu <= bobs.granted_msu < bobs.held_msu + bobs.held_msu // RACE_FITS
        for i, public_id in enumerate(accepted_race):  # they would hold the cluster's CPUs
            cancelled = replicas[i % 2].client.post(f"{JOBS}/{public_id}/cancel", headers=bob)
            assert cancelled.status_code in (200, 202), cancelled.text

        # --- one tracker per cluster while both run
        holders = _sample_holders(database, seconds=2.0)
        assert len(holders) == 1, holders
        (leader_holder,) = holders
        leader = next(r for r in replicas if r.process.pid == _pid(leader_holder))
        survivor = next(r for r in replicas if r is not leader)

        # --- mixed load on both; the leader killed, then PostgreSQL restarted, meanwhile
        load = Load()
        stop = threading.Event()
        threads = [threading.Thread(target=fn, args=(replicas, world, alice, load, stop))
                   for fn in (_submitter, _submitter, _reader, _reader, _canceller)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(3.0)
            leader.process.kill()
            killed = time.monotonic()
            new_holder = wait_for("the survivor holds the tracker lease", lambda: _taken_over(
                database, leader_holder), within=LEASE_SECONDS + 10, every=0.1)
            takeover = time.monotonic() - killed
            assert _pid(new_holder) == survivor.process.pid
            time.sleep(2.0)
            gap_started = time.monotonic()
            pg.stop("immediate")  # a crash: only what was committed (and synced) survives
            pg.start()
            wait_for("the survivor is ready again", lambda: _ready(survivor), within=30,
                     every=0.1)
            pg_gap = time.monotonic() - gap_started
            time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - killed) - 3.0))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)

        # the database restarting is a 503 with Retry-After (database-unavailable), never a 500
        assert not [k for k in load.answers if k.endswith(" 500")], load.answers

        # --- every accepted job has its row and its Slurm job; every row ends up settled
        # (a submission cut by the restart is found by its marker, or known never sent)
        accepted = [*accepted_race, *load.accepted]
        rows = wait_for("every job settled by the tracker", lambda: _settled(database),
                        within=60, every=0.5)
        assert set(accepted) <= set(rows)
        assert all(rows[public_id] is not None for public_id in accepted)
        slurm_ids = sorted(v for v in rows.values() if v is not None)
        known = wait_for("Slurm knows every job", lambda: _slurm_knows(testcluster, slurm_ids),
                         within=30, every=1.0)
        assert known >= set(slurm_ids)
        assert len(set(slurm_ids)) == len(slurm_ids)  # one Slurm job per job
        with database.session() as session:
            repeated = session.execute(
                select(JobEvent.job_id, JobEvent.from_state, JobEvent.to_state)
                .group_by(JobEvent.job_id, JobEvent.from_state, JobEvent.to_state)
                .having(func.count() > 1)).all()
            assert repeated == []
            assert ledger.verify(session) == []
            bobs = session.scalars(select(Allocation)
                                   .where(Allocation.member_id == world.beta.id)).one()
            assert bobs.charged_msu - bobs.refunded_msu <= bobs.granted_msu
        assert takeover <= LEASE_SECONDS + 2.0  # the lease's end, and one tracker interval

    print(f"\nreplicas: setup {setup:.1f} s; race {2 * RACE_FITS} submissions across 2 "
          f"replicas, {len(accepted_race)} accepted (the allocation held {RACE_FITS}); load "
          f"{sum(v for k, v in load.answers.items() if k.startswith('submit'))} submissions "
          f"({len(load.accepted)} accepted), {load.reads} reads, {load.cancels} cancels; "
          f"answers {dict(sorted(load.answers.items()))}; tracker takeover {takeover:.1f} s "
          f"after kill -9 (lease {LEASE_SECONDS:g} s); PostgreSQL restart gap {pg_gap:.1f} s; "
          f"total {time.monotonic() - started:.1f} s")


def _race(replicas: list[GatewayProcess], database: Database, world: World,
          bob: dict[str, str]) -> list[str]:
    """2 x RACE_FITS submissions at once, half on each replica, for an allocation that holds
    RACE_FITS of them exactly: the accepted ones."""
    # they last longer than the race: none ends and gives its hold back meanwhile
    body = script_job(world.beta_project, "#!/bin/bash\nsleep 300\n", name="race")
    quote = replicas[0].client.post(f"{JOBS}/quote", headers=bob, json=body)
    assert quote.status_code == 200, quote.text
    price = int(quote.json()["quote_msu"])
    with database.transaction() as session:
        allocation = session.scalars(select(Allocation)
                                     .where(Allocation.member_id == world.beta.id)).one()
        quotas.adjust(session, member_id=world.beta.id, allocation_id=allocation.id,
                      amount_msu=RACE_FITS * price + price // 2 - allocation.granted_msu,
                      reason="the replica race", actor="replicas-test")
    barrier = threading.Barrier(2 * RACE_FITS)
    answers: list[httpx.Response | None] = [None] * (2 * RACE_FITS)

    def submit(i: int) -> None:
        barrier.wait()
        answers[i] = replicas[i % 2].client.post(JOBS, headers=bob, json=body)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2 * RACE_FITS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = Counter(a.status_code if a is not None else 0 for a in answers)
    assert set(statuses) <= {*ACCEPTED, 403}, statuses
    return [a.json()["id"] for a in answers if a is not None and a.status_code in ACCEPTED]


def _sample_holders(database: Database, *, seconds: float) -> set[str]:
    holders = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lease = _lease(database)
        if lease is not None and lease[1] > 0:
            holders.add(lease[0])
        time.sleep(0.1)
    return holders


def _taken_over(database: Database, old: str) -> str | None:
    lease = _lease(database)
    return lease[0] if lease is not None and lease[0] != old and lease[1] > 0 else None


def _ready(replica: GatewayProcess) -> bool:
    answer = _call(replica.client, "GET", "/readyz")
    return answer is not None and answer.status_code == 200


def _alive(replicas: list[GatewayProcess]) -> list[GatewayProcess]:
    return [r for r in replicas if r.process.poll() is None]


def _submitter(replicas: list[GatewayProcess], world: World, alice: dict[str, str],
               load: Load, stop: threading.Event) -> None:
    body = script_job(world.alpha_project, "#!/bin/bash\nsleep 1\n", name="load")
    turn = 0
    while not stop.is_set():
        turn += 1
        alive = _alive(replicas)
        answer = _call(alive[turn % len(alive)].client, "POST", JOBS, headers=alice, json=body)
        load.count("submit", answer.status_code if answer is not None else "lost")
        if answer is not None and answer.status_code in ACCEPTED:
            with load.lock:
                load.accepted.append(answer.json()["id"])
        time.sleep(0.2)


def _reader(replicas: list[GatewayProcess], world: World, alice: dict[str, str],
            load: Load, stop: threading.Event) -> None:
    turn = 0
    while not stop.is_set():
        turn += 1
        alive = _alive(replicas)
        client = alive[turn % len(alive)].client
        with load.lock:
            latest = load.accepted[-1] if load.accepted else None
        path = f"{JOBS}/{latest}" if latest and turn % 2 else JOBS
        answer = _call(client, "GET", path, headers=alice)
        load.count("read", answer.status_code if answer is not None else "lost")
        with load.lock:
            load.reads += 1
        time.sleep(0.05)


def _canceller(replicas: list[GatewayProcess], world: World, alice: dict[str, str],
               load: Load, stop: threading.Event) -> None:
    done = 0
    while not stop.is_set():
        with load.lock:
            todo = load.accepted[done::3][:1]  # every third accepted job
        if todo:
            done += 3
            alive = _alive(replicas)
            answer = _call(alive[done % len(alive)].client, "POST",
                           f"{JOBS}/{todo[0]}/cancel", headers=alice)
            load.count("cancel", answer.status_code if answer is not None else "lost")
            with load.lock:
                load.cancels += 1
        time.sleep(0.3)


def _settled(database: Database) -> dict[str, str | None] | None:
    """public id -> Slurm id of every job, once none is left in doubt."""
    with database.session() as session:
        rows = session.execute(select(Job.public_id, Job.scheduler_id, Job.state)).all()
    if any(state in IN_DOUBT for _, _, state in rows):
        return None
    return {public_id: scheduler_id for public_id, scheduler_id, _ in rows}


def _slurm_knows(testcluster: Cluster, slurm_ids: list[str]) -> set[str] | None:
    done = testcluster.shell("ADMIN", "sacct -X -n -P --allusers --format=JobID -j "
                             + ",".join(slurm_ids))
    found = {line.strip() for line in done.stdout.splitlines() if line.strip()}
    return found if found >= set(slurm_ids) else None
