"""SQLite has one writer at a time: a process's writers wait for it in turn on a lock of the
Database (gateway.db), not in SQLite's busy handler; a turn that does not come in time is a
503 (DatabaseUnavailable), as a locked database is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from gateway import db
from gateway.db import Database, DatabaseUnavailable

WRITERS = 8


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'writers.db'}")
    with database.transaction() as session:
        session.execute(text("CREATE TABLE t (writer INTEGER)"))
    yield database
    database.dispose()


@contextmanager
def writing(database: Database) -> Iterator[None]:
    """A write transaction held open in a thread of its own for the block's duration."""
    started, done = threading.Event(), threading.Event()

    def hold() -> None:
        with database.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            started.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert started.wait(10)
        yield
    finally:
        done.set()
        holder.join()


def test_the_writers_of_one_process_hold_a_connection_one_at_a_time(database: Database) -> None:
    held, most = 0, 0
    counting = threading.Lock()

    def checkout(*_: Any) -> None:
        nonlocal held, most
        with counting:
            held += 1
            most = max(most, held)

    def checkin(*_: Any) -> None:
        nonlocal held
        with counting:
            held -= 1

    event.listen(database.engine, "checkout", checkout)
    event.listen(database.engine, "checkin", checkin)
    start = threading.Barrier(WRITERS)

    def write(writer: int) -> None:
        start.wait()
        with database.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (:w)"), {"w": writer})
            time.sleep(0.01)  # the others arrive meanwhile

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # without the turn, each writer takes a connection and waits in SQLite's busy handler
    assert most == 1
    with database.transaction(write=False) as session:
        assert session.scalar(text("SELECT count(*) FROM t")) == WRITERS


def test_a_writer_whose_turn_does_not_come_in_time_is_refused_as_unavailable(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_SECONDS", 0.2)
    with writing(database):
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable), database.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
        assert time.monotonic() - started < 5
    with database.transaction() as session:  # the turn is free again
        session.execute(text("INSERT INTO t VALUES (3)"))
        assert session.scalar(text("SELECT count(*) FROM t")) == 2


def test_a_writer_waits_for_another_processs_writer_before_taking_a_connection(
        database: Database) -> None:
    # a second Database on the same file has a turn of its own, as another process has: the
    # two meet at the file lock beside the database
    other = Database(database.url)
    taken = threading.Event()
    event.listen(other.engine, "checkout", lambda *_: taken.set())

    def write() -> None:
        with other.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))

    writer = threading.Thread(target=write)
    with writing(database):
        writer.start()
        # without the file lock it takes a connection and waits in SQLite's busy handler
        assert not taken.wait(0.3)
    writer.join(10)
    assert taken.is_set() and not writer.is_alive()
    with database.transaction(write=False) as session:
        assert session.scalar(text("SELECT count(*) FROM t")) == 2
    other.dispose()
