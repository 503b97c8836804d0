"""Two submissions racing for the last hours never both pass: 50 concurrent holds of 1 SU on
10 SU, from threads of one process and from two processes, on real commits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from factories import make_member
from quota_helpers import entries_total, give
from race_worker import run_holds
from sqlalchemy import func, select

from gateway.db import Database
from quotas import ledger
from quotas.models import Allocation, Hold, HoldState

WORKER = Path(__file__).with_name("race_worker.py")


def _setup(database: Database) -> tuple[int, int]:
    with database.transaction() as session:
        member = make_member(session)
        allocation = give(session, member, 10)
        return member.id, allocation.id


def _check_books(database: Database, allocation_id: int) -> None:
    with database.session() as session:
        allocation = session.get(Allocation, allocation_id)
        assert allocation is not None
        assert allocation.held_msu == 10_000 and allocation.available_msu == 0
        # the balance is the sum of the entries: 10 000 granted, ten holds of 1 000
        assert entries_total(session, allocation_id) == allocation.available_msu
        assert session.scalar(select(func.count()).select_from(Hold)
                              .where(Hold.state == HoldState.open)) == 10
        assert ledger.verify(session) == []


def test_fifty_concurrent_holds_of_which_ten_fit_place_exactly_ten(
        fresh_database: Database) -> None:
    member_id, allocation_id = _setup(fresh_database)
    placed, refused, errors = run_holds(fresh_database, member_id, "t", 50)
    assert errors == []
    assert (placed, refused) == (10, 40)
    _check_books(fresh_database, allocation_id)


def test_two_processes_racing_on_one_database_place_exactly_ten(
        fresh_database: Database, tmp_path: Path) -> None:
    member_id, allocation_id = _setup(fresh_database)
    go = tmp_path / "go"
    processes = [
        subprocess.Popen([sys.executable, str(WORKER), fresh_database.url, str(member_id),
                          prefix, "25", str(go)], stdout=subprocess.PIPE, text=True)
        for prefix in ("p1", "p2")
    ]
    go.touch()
    outputs = [p.communicate(timeout=120)[0].splitlines() for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    counts = [tuple(int(n) for n in out[0].split()) for out in outputs]
    assert [c[2] for c in counts] == [0, 0], outputs
    assert sum(c[0] for c in counts) == 10 and sum(c[1] for c in counts) == 40
    _check_books(fresh_database, allocation_id)


def test_concurrent_settlements_of_one_job_charge_it_once(fresh_database: Database) -> None:
    import threading

    from quota_helpers import hold_hours, settle_hours

    from quotas.models import EntryKind, LedgerEntry

    with fresh_database.transaction() as session:
        member = make_member(session)
        allocation_id = give(session, member, 10).id
        hold_hours(session, member, "j1", 2)
    gate, errors = threading.Event(), []

    def settle() -> None:
        gate.wait(10)
        try:
            with fresh_database.transaction() as session:
                settle_hours(session, "j1", 1)
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=settle) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with fresh_database.session() as session:
        charges = session.scalars(select(LedgerEntry).where(
            LedgerEntry.kind == EntryKind.charge)).all()
        assert [c.amount_msu for c in charges] == [-1000]
        allocation = session.get(Allocation, allocation_id)
        assert allocation is not None and allocation.used_msu == 1000
        assert ledger.verify(session) == []
