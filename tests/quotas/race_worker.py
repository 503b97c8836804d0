"""One process of the two-process race: `python race_worker.py URL MEMBER_ID PREFIX THREADS`.

Waits for a start file (both processes go at once), runs THREADS concurrent one-SU holds, each
in its own session and transaction, and prints how many were placed and refused.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "quotas"))

from quota_helpers import HOUR, ONE_GPU, WEIGHTS  # noqa: E402

from gateway.db import Database  # noqa: E402
from quotas import service  # noqa: E402
from quotas.errors import QuotaExceeded  # noqa: E402


def run_holds(database: Database, member_id: int, prefix: str, threads: int,
              start: threading.Event | None = None) -> tuple[int, int, list[str]]:
    """`threads` concurrent holds of one SU; (placed, refused, unexpected errors)."""
    placed, refused, errors = 0, 0, []
    lock = threading.Lock()
    gate = start or threading.Event()

    def one(n: int) -> None:
        nonlocal placed, refused
        gate.wait(30)
        job = service.JobRef(job_id=f"{prefix}-{n}", member_id=member_id, project_id=None,
                             user_id=None, cluster="local", partition="gpu")
        try:
            with database.transaction() as session:
                service.hold(session, job, WEIGHTS, ONE_GPU, HOUR)
            outcome = "placed"
        except QuotaExceeded:
            outcome = "refused"
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            if outcome == "placed":
                placed += 1
            elif outcome == "refused":
                refused += 1
            else:
                errors.append(outcome)

    workers = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    if start is None:
        gate.set()
    for worker in workers:
        worker.join(120)
    return placed, refused, errors


def main() -> None:
    url, member_id, prefix, threads, go_file = sys.argv[1:6]
    database = Database(url)
    deadline = time.monotonic() + 60
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    placed, refused, errors = run_holds(database, int(member_id), prefix, int(threads))
    database.dispose()
    print(f"{placed} {refused} {len(errors)}", *errors[:3], sep="\n")


if __name__ == "__main__":
    main()
