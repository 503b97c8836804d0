"""The reads made on the event loop (gateway.loop_reads) never wait on a SQLite lock: a locked
database fails the read at once (its callers then read from a worker thread), the loop goes on
meanwhile, and the same connection reads again once the lock is gone. SQLite only, on a file of
the test's own, whatever the suite's database."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import column, select, table

from gateway.db import Database
from gateway.loop_reads import LoopReadFailed, LoopReads

STALL_BOUND_S = 1.0
VALUES = select(column("v")).select_from(table("t"))


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "locked.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    yield path


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """A writer holding the database's lock so that no other connection may even read (WAL
    with an exclusive locking mode: what a migration or a VACUUM may do)."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (2)")
    return holder


def test_a_held_write_lock_fails_a_loop_read_at_once_and_the_loop_goes_on(
    sqlite_file: Path,
) -> None:
    database = Database(f"sqlite:///{sqlite_file}")
    reads = LoopReads(database)
    holder = _hold_write_lock(sqlite_file)

    async def scenario() -> tuple[float, float, tuple[object, ...] | None]:
        gaps: list[float] = []

        async def ticker() -> None:  # the loop's other requests
            last = time.monotonic()
            while True:
                await anyio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ticker)
            started = time.monotonic()
            with pytest.raises(LoopReadFailed, match="locked"):
                await reads.first(VALUES)
            failed_after = time.monotonic() - started
            await anyio.sleep(0.1)
            holder.execute("ROLLBACK")
            holder.close()
            again = await reads.first(VALUES)
            tasks.cancel_scope.cancel()
        return failed_after, max(gaps), again

    try:
        failed_after, longest_gap, again = anyio.run(scenario)
    finally:
        reads.close()
        database.dispose()
    assert failed_after < STALL_BOUND_S
    assert longest_gap < STALL_BOUND_S
    assert again == (1,)  # the holder's row was never committed
