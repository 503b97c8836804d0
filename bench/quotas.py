"""Quota hold latency against the size of the member's ledger.

A hold reads and moves balance rows and appends one entry; it never sums the ledger. So its
latency must not grow with the ledger: three databases are filled, their member having 0,
10 000 and 100 000 ledger entries, and N holds are timed on each (each hold its own write
transaction, commit included), interleaved round-robin so that load on the machine hits every
level alike. The 100 000-entry median must stay within 1.2 x the empty one: exit 1 if not.

The ledgers are filled with settled jobs (hold, release and charge entries, their hold rows and
the balance they add up to), bulk-inserted; `ledger verify` holds on each.

    .venv/bin/python bench/quotas.py [-n 400] [--postgresql postgresql+psycopg://postgres@127.0.0.1:55432/postgres]

Default: SQLite files in a temporary directory. With --postgresql (a maintenance database
URL), three databases of its own are created on that server and dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consortium.base import utcnow  # noqa: E402
from consortium.models import ClusterIdentity, Member, MemberKind  # noqa: E402
from gateway import migrations  # noqa: E402
from gateway.db import Database  # noqa: E402
from quotas import ledger, service  # noqa: E402
from quotas.models import (  # noqa: E402
    Allocation,
    AllocationKind,
    EntryKind,
    Hold,
    HoldState,
    LedgerEntry,
)
from quotas.rates import Amounts  # noqa: E402
from schedulers.config import BillingWeights  # noqa: E402

LEVELS = (0, 10_000, 100_000)
FLOOR = 1.2
WEIGHTS = BillingWeights(gpu=1.0, cpu=0.25, mem_gb=0.0625)
ONE_GPU = Amounts(gpus=1, cpus=1, mem_mb=1024)
JOB_MSU = 1000  # each synthetic job: held 1 SU, charged 1 SU
BATCH = 5000


def setup(database: Database) -> tuple[int, int]:
    now = utcnow()
    with database.transaction() as session:
        member = Member(slug="bench", name="Bench SA", kind=MemberKind.company)
        session.add(member)
        session.flush()
        session.add(ClusterIdentity(member_id=member.id, cluster="local", unix_user="bench",
                                    slurm_account="bench", ssh_key_ref="bench"))
        allocation = service.grant(
            session, member_id=member.id, amount_msu=10**12, kind=AllocationKind.grant,
            starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=365), actor="bench")
        return member.id, allocation.id


def fill(database: Database, member_id: int, allocation_id: int, entries: int) -> None:
    """Add settled jobs until the member has at least `entries` ledger entries."""
    with database.session() as session:
        have = len(session.scalars(select(LedgerEntry.id)
                                   .where(LedgerEntry.member_id == member_id)).all())
    jobs = max(0, -(-(entries - have) // 3))
    done = 0
    while done < jobs:
        count = min(BATCH, jobs - done)
        ids = [f"fill-{have}-{done + i}" for i in range(count)]
        with database.transaction() as session:
            session.execute(insert(Hold), [
                {"job_id": job, "allocation_id": allocation_id, "member_id": member_id,
                 "project_id": None, "user_id": None, "cluster": "local", "partition": "gpu",
                 "amount_msu": JOB_MSU, "state": HoldState.settled, "charged_msu": JOB_MSU,
                 "refunded_msu": 0, "created_at": utcnow(), "closed_at": utcnow()}
                for job in ids])
            rows = []
            for job in ids:
                for kind, amount in ((EntryKind.hold, -JOB_MSU), (EntryKind.release, JOB_MSU),
                                     (EntryKind.charge, -JOB_MSU)):
                    rows.append({"at": utcnow(), "allocation_id": allocation_id,
                                 "member_id": member_id, "kind": kind, "amount_msu": amount,
                                 "project_id": None, "user_id": None, "cluster": "local",
                                 "partition": "gpu", "job_id": job, "actor": "bench",
                                 "actor_user_id": None, "reason": "",
                                 "idempotency_key": f"{kind.value}:{job}"})
            session.execute(insert(LedgerEntry), rows)
            allocation = session.get(Allocation, allocation_id)
            assert allocation is not None
            allocation.charged_msu += count * JOB_MSU
        done += count


def hold_once(database: Database, member_id: int, job_id: str) -> float:
    """Milliseconds for one hold in its own write transaction."""
    job = service.JobRef(job_id=job_id, member_id=member_id, project_id=None, user_id=None,
                         cluster="local", partition="gpu")
    started = time.perf_counter()
    with database.transaction() as session:
        service.hold(session, job, WEIGHTS, ONE_GPU, 3600)
    return (time.perf_counter() - started) * 1000


def databases(tmp: str, postgresql: str | None) -> tuple[list[Database], Callable[[], None]]:
    """One migrated, empty database per level, and how to get rid of them."""
    if postgresql is None:
        urls = [f"sqlite:///{tmp}/bench-{level}.db" for level in LEVELS]
        drop: Callable[[], None] = lambda: None  # noqa: E731 - the directory goes away
    else:
        admin = create_engine(postgresql, isolation_level="AUTOCOMMIT")
        names = [f"hpcgw_bench_{level}_{uuid.uuid4().hex[:8]}" for level in LEVELS]
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        base = make_url(postgresql)
        urls = [base.set(database=name).render_as_string(hide_password=False) for name in names]

        def drop() -> None:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    for url in urls:
        migrations.upgrade(url)
    return [Database(url) for url in urls], drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--holds", type=int, default=400, help="holds timed per level")
    parser.add_argument("--postgresql", metavar="URL",
                        help="a PostgreSQL server's maintenance database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dbs, drop = databases(tmp, args.postgresql)
        try:
            medians = run(dbs, args.holds)
        finally:
            for database in dbs:
                database.dispose()
            drop()
    ratio = medians[-1] / medians[0]
    ok = ratio <= FLOOR
    print(f"floor: median at {LEVELS[-1]} entries <= {FLOOR} x the empty one: "
          f"{ratio:.2f} -> {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


def run(dbs: list[Database], holds: int) -> list[float]:
    members = []
    for database, level in zip(dbs, LEVELS, strict=True):
        member_id, allocation_id = setup(database)
        fill(database, member_id, allocation_id, level)
        members.append(member_id)
    counts = []
    for database, member_id in zip(dbs, members, strict=True):
        with database.session() as session:
            counts.append(len(session.scalars(select(LedgerEntry.id).where(
                LedgerEntry.member_id == member_id)).all()))
            assert ledger.verify(session) == []
    timings: list[list[float]] = [[] for _ in LEVELS]
    warmup = max(20, holds // 10)
    for n in range(-warmup, holds):
        order = list(range(len(LEVELS)))
        order = order[n % len(order):] + order[:n % len(order)]  # who goes first rotates
        for i in order:
            took = hold_once(dbs[i], members[i], f"bench-{n}")
            if n >= 0:
                timings[i].append(took)
    print(f"quota hold latency ({dbs[0].dialect}; {holds} holds per level, interleaved, each "
          "in its own write transaction, commit included)")
    print(f"{'entries':>8} {'median ms':>10} {'p95 ms':>8} {'ratio':>6}")
    medians = [statistics.median(t) for t in timings]
    for count, times, median in zip(counts, timings, medians, strict=True):
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"{count:>8} {median:>10.3f} {p95:>8.3f} {median / medians[0]:>6.2f}")
    return medians


if __name__ == "__main__":
    sys.exit(main())
