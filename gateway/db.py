"""Engine and sessions. SQLite: WAL, foreign keys, and writers that take the lock up front."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_errors
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from consortium.errors import DomainError
from consortium.texts import translatable

# Execution option on the writers' engine: on SQLite their transactions start with
# BEGIN IMMEDIATE, so two writers queue on busy_timeout instead of one failing with
# "database is locked" when it upgrades a read lock (the quota hold relies on this).
WRITE_LOCK_OPTION = "hpcgw_write_lock"

# what a caller should wait before retrying when the database does not answer (a restart, a
# failover: seconds)
DATABASE_RETRY_AFTER_SECONDS = 5

SQLITE_POOL_SIZE = 15  # connections to a SQLite file, all kept (make_engine)
SQLITE_BUSY_SECONDS = 30  # how long a SQLite writer waits for the write lock


class DatabaseUnavailable(DomainError):
    """The database did not answer (down, restarting, locked, its pool exhausted): 503 with
    Retry-After, not a 500, for the caller can retry and nothing is wrong with its request."""

    code = "database-unavailable"
    title = translatable("Database unavailable")

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


def unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """The refusal a connection-level failure of the database is; None for any other error
    (a failing statement is a bug, and stays a 500)."""
    if not (isinstance(error, sa_errors.TimeoutError | sa_errors.OperationalError
                       | sa_errors.InterfaceError)
            or (isinstance(error, sa_errors.DBAPIError) and error.connection_invalidated)):
        return None
    return DatabaseUnavailable("the database is not answering; try again shortly",
                               retry_after=DATABASE_RETRY_AFTER_SECONDS)


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    # a failed statement's message never carries its parameters (token hashes, emails) into
    # the logs
    kwargs = {"hide_parameters": True, **kwargs}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database not in (None, "", ":memory:"):
            # Submit floor (bench/edge.py): a file's pool keeps every connection it may hand
            # out, the same 15 at most at once as SQLAlchemy's default 5 + 10, and none is an
            # overflow one, which a burst would open (4 PRAGMAs) and close at each checkout.
            kwargs = {"pool_size": SQLITE_POOL_SIZE, "max_overflow": 0, **kwargs}
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS},
            **kwargs
        )
        _configure_sqlite(engine)
        return engine
    # the caller's pool settings win over these defaults
    return create_engine(url, **{"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20,
                                 **kwargs})


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's own handling breaks SAVEPOINT).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE_LOCK_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class _SqliteWriters:
    """SQLite has one writer at a time. Writers wait for it in turn here, instead of in SQLite's
    busy handler, which sleeps between tries (up to 100 ms each) and lets newcomers pass: 16
    clients submitting at once to `hpcgw serve --workers 2` waited up to 1.7 s there, 0.36 s
    here. A process's writers take a lock, then the one holding it an flock on a file beside the
    database, from which the kernel wakes the next process as soon as it is free (and which a
    process that dies lets go). SQLite's own lock still guards against other programs."""

    def __init__(self, url: str) -> None:
        self._lock = threading.Lock()
        database = make_url(url).database
        self._file = f"{database}-writers" if database not in (None, "", ":memory:") else None
        self._fd: int | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        """The turn, or a 503 if this process's does not come within SQLITE_BUSY_SECONDS."""
        if not self._lock.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise DatabaseUnavailable("the database is busy; try again shortly",
                                      retry_after=DATABASE_RETRY_AFTER_SECONDS)
        try:
            if self._file is None:
                yield
                return
            if self._fd is None:
                # read-only is enough to flock: any user the gateway runs as can
                self._fd = os.open(self._file, os.O_RDONLY | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # held by a writer of another process only
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    """One engine and two session factories: readers, and writers (see WRITE_LOCK_OPTION)."""

    def __init__(self, url: str, *, engine: Engine | None = None, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = engine or make_engine(url, **engine_kwargs)
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(
            self.engine.execution_options(**{WRITE_LOCK_OPTION: True}), expire_on_commit=False
        )
        self._sqlite_writers = _SqliteWriters(url) if self.dialect == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def pool_capacity(self) -> int | None:
        """Connections the pool hands out at once (pool_size + max_overflow), the most beyond
        which a checkout waits; None when no checkout ever waits (NullPool, StaticPool, ...)."""
        pool = self.engine.pool
        if not isinstance(pool, QueuePool):
            return None
        overflow = pool._max_overflow  # no public accessor; -1 (or pool_size 0): unbounded
        return None if overflow < 0 else pool.size() + overflow

    def session(self, *, write: bool = False) -> Session:
        return (self._writers if write else self._readers)()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error."""
        turn = self._writer_turn() if write else nullcontext()
        with turn, self.session(write=write) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if self._sqlite_writers is None:
            yield
            return
        with self._sqlite_writers.turn():
            yield

    def dispose(self) -> None:
        self.engine.dispose()
        if self._sqlite_writers is not None:
            self._sqlite_writers.close()

