"""Engine and sessions. SQLite: WAL, foreign keys, and writers that take the lock up front."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_errors
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from consortium.errors import DomainError
from consortium.texts import translatable

# Execution option on the writers' engine: on SQLite their transactions start with
# BEGIN IMMEDIATE, so two writers queue (in turn, _WriterTurns) instead of one failing with
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


class _WriterTurns:
    """SQLite has one writer at a time. Its writers (BEGIN IMMEDIATE) wait for it in turn here,
    instead of in SQLite's busy handler, which sleeps between tries (up to 100 ms each) and lets
    newcomers pass: 16 clients submitting at once to `hpcgw serve --workers 2` waited up to
    1.9 and 3.0 s there, 0.57 and 0.42 s here (runs interleaved, 256 submissions each). A turn
    is held from BEGIN IMMEDIATE to COMMIT or ROLLBACK, as SQLite's lock is: first a lock of the
    engine, then an flock on a file beside the database, from which the kernel wakes the next
    process as soon as it is free (and which a process that dies lets go). SQLite's own lock
    still guards against other programs."""

    def __init__(self, database: str | None) -> None:
        self._lock = threading.Lock()
        self._file = f"{database}-writers" if database not in (None, "", ":memory:") else None
        self._fd: int | None = None
        self._holder: object | None = None  # the DBAPI connection whose transaction has it

    def take(self, holder: object) -> None:
        """The turn for `holder`'s transaction, or a 503 if it does not come in time."""
        if not self._lock.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise DatabaseUnavailable("the database is busy; try again shortly",
                                      retry_after=DATABASE_RETRY_AFTER_SECONDS)
        try:
            if self._file is not None:
                if self._fd is None:  # read-only is enough to flock: any user the gateway runs as
                    self._fd = os.open(self._file, os.O_RDONLY | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # held by a writer of another process only
        except BaseException:
            self._lock.release()
            raise
        self._holder = holder

    def end(self, holder: object) -> None:
        """`holder`'s transaction ended: the turn passes on if it had it."""
        if self._holder is not holder:
            return
        self._holder = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _configure_sqlite(engine: Engine) -> None:
    turns = _WriterTurns(engine.url.database)

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
        if not conn.get_execution_options().get(WRITE_LOCK_OPTION, False):
            conn.exec_driver_sql("BEGIN")
            return
        holder = conn.connection.dbapi_connection
        turns.take(holder)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turns.end(holder)
            raise

    # The turn ends after the DBAPI's COMMIT or ROLLBACK, for which SQLAlchemy has no event
    # (its own run before them): the dialect's two calls are wrapped. A connection closed in a
    # transaction (as an invalidated one is) ends it too. SQLAlchemy passes the pool's proxy
    # or the DBAPI connection itself: the turn is keyed on the latter.
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(connection: Any) -> None:
        try:
            commit(connection)
        finally:
            turns.end(getattr(connection, "dbapi_connection", connection))

    def do_rollback(connection: Any) -> None:
        try:
            rollback(connection)
        finally:
            turns.end(getattr(connection, "dbapi_connection", connection))

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]
    event.listen(engine, "close", lambda dbapi_connection, _record: turns.end(dbapi_connection))
    event.listen(engine, "engine_disposed", lambda _engine: turns.close())


class Database:
    """One engine and two session factories: readers, and writers (see WRITE_LOCK_OPTION)."""

    def __init__(self, url: str, *, engine: Engine | None = None, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = engine or make_engine(url, **engine_kwargs)
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(
            self.engine.execution_options(**{WRITE_LOCK_OPTION: True}), expire_on_commit=False
        )

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
        with self.session(write=write) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()

