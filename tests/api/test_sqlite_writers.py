"""SQLite has one writer at a time: writers wait for it in turn (gateway.db's writer turns, a
lock per engine then an flock beside the database) before they send BEGIN IMMEDIATE, not in
SQLite's busy handler after it; a turn that does not come in time is a 503
(DatabaseUnavailable), as a locked database is."""

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


def _begins(database: Database) -> list[str]:
    """The BEGIN IMMEDIATEs sent on the database (as "begin") and its commits, in order."""
    sent: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if sql == "BEGIN IMMEDIATE":
            sent.append("begin")

    event.listen(database.engine, "before_cursor_execute", statement)
    event.listen(database.engine, "commit", lambda _conn: sent.append("commit"))
    return sent


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


def test_the_writers_of_one_process_begin_one_after_the_others_commit(
        database: Database) -> None:
    sent = _begins(database)
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
    # without the turns, each writer sends BEGIN IMMEDIATE at once and waits in SQLite
    assert sent == ["begin", "commit"] * WRITERS
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


def test_a_transaction_that_ends_in_error_passes_the_turn_on(database: Database) -> None:
    with pytest.raises(ZeroDivisionError), database.transaction() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        _ = 1 / 0
    with database.transaction() as session:  # within the turn's wait, not after it
        session.execute(text("INSERT INTO t VALUES (2)"))
        assert session.scalar(text("SELECT count(*) FROM t")) == 1


def test_a_write_waits_for_another_processs_writer_before_it_begins(database: Database) -> None:
    # a second Database on the same file has turns of its own, as another process has: the two
    # meet at the file lock beside the database
    other = Database(database.url)
    sent = _begins(other)

    def write() -> None:
        with other.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))

    writer = threading.Thread(target=write)
    with writing(database):
        writer.start()
        time.sleep(0.3)
        # without the file lock it sends BEGIN IMMEDIATE and waits in SQLite's busy handler
        assert sent == []
    writer.join(10)
    assert sent == ["begin", "commit"] and not writer.is_alive()
    with database.transaction(write=False) as session:
        assert session.scalar(text("SELECT count(*) FROM t")) == 2
    other.dispose()


def test_a_write_that_commits_its_own_transactions_before_its_first_statement_is_not_stuck(
        database: Database) -> None:
    # the page's sign-in commits the throttle and audit before the request's own session
    # writes: the outer transaction has no turn until it sends its first statement
    with database.transaction() as outer:
        with database.transaction() as inner:
            inner.execute(text("INSERT INTO t VALUES (1)"))
        outer.execute(text("INSERT INTO t VALUES (2)"))
    with database.transaction(write=False) as session:
        assert session.scalar(text("SELECT count(*) FROM t")) == 2


def test_a_connection_invalidated_in_its_transaction_passes_the_turn_on(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_SECONDS", 2)
    with database.session(write=True) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        session.connection().invalidate()  # as a lost connection is: no ROLLBACK is sent
    with database.transaction() as session:  # without a 503 after SQLITE_BUSY_SECONDS
        session.execute(text("INSERT INTO t VALUES (2)"))
        assert session.scalar(text("SELECT count(*) FROM t")) == 1
