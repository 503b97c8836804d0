"""Small reads answered on the event loop itself, without a worker thread.

For the indexed reads of a few integers that every request of a hot path makes (the job read
path's check, a kept caller's auth epoch), a hop to a worker thread costs more than the read.
SQLite answers through its driver on a connection of its own (microseconds; waiting for a busy
pool would stall the loop), which never waits on a lock (busy_timeout 0): a locked database
fails the read at once. PostgreSQL answers on an asyncio connection of its own (psycopg), in
autocommit, one read at a time: one round trip, with no pool checkout, pre-ping or transaction
to end. A read that fails here raises LoopReadFailed and the caller reads the usual way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ClauseElement
from sqlalchemy.engine import make_url
from sqlalchemy.sql.compiler import SQLCompiler

from gateway.db import Database

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_SECONDS = 5
APPLICATION_NAME = "hpcgw-loop-reads"  # how its connections show in pg_stat_activity


class LoopReadFailed(Exception):
    """The read could not be made on the loop (the connection is gone, the server is down)."""


class LoopReads:
    def __init__(self, database: Database) -> None:
        self._dialect = database.engine.dialect
        self._compiled: dict[ClauseElement, SQLCompiler] = {}
        self._sqlite_file = (make_url(database.url).database if database.dialect == "sqlite"
                             else None)
        self._sqlite_connection: sqlite3.Connection | None = None
        self._conninfo = database.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        self._pg: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._pg_loop: asyncio.AbstractEventLoop | None = None
        self._pg_lock = asyncio.Lock()

    async def first(self, statement: ClauseElement,
                    parameters: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The statement's first row (its bind parameters by name)."""
        rows = await self.all(statement, parameters)
        return rows[0] if rows else None

    async def all(self, statement: ClauseElement,
                  parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """The statement's rows (its bind parameters by name; a list for an expanding one,
        `column.in_(bindparam(name, expanding=True))`)."""
        compiled = self._compiled.get(statement)
        if compiled is None:
            made = statement.compile(dialect=self._dialect)
            if not isinstance(made, SQLCompiler):
                raise TypeError(f"not a SQL statement: {statement}")
            compiled = self._compiled[statement] = made
        parameters = parameters or {}
        sql: str = compiled.string
        names: Sequence[str] | None = compiled.positiontup
        if any(bind.expanding for bind in compiled.binds.values()):
            expanded = compiled.construct_expanded_state(parameters)
            sql, names, parameters = expanded.statement, expanded.positiontup, expanded.parameters
        if self._sqlite_file is not None:
            return self._sqlite_rows(self._sqlite_file, sql,
                                     tuple(parameters[name] for name in names or ()))
        return await self._pg_rows(sql, parameters)

    def _sqlite_rows(self, file: str, sql: str,
                     parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            if self._sqlite_connection is None:
                # autocommit: each read sees the latest commit and holds no lock after it
                self._sqlite_connection = sqlite3.connect(
                    file, timeout=0, isolation_level=None, check_same_thread=False)
                self._sqlite_connection.execute("PRAGMA busy_timeout=0")
            cursor = self._sqlite_connection.cursor()
            try:
                cursor.execute(sql, parameters)
                return cursor.fetchall()
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            if not _locked(exc):
                self._close_sqlite()
            raise LoopReadFailed(str(exc)) from exc

    async def _pg_rows(self, sql: str, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        # imported here, not with the module: a worker on SQLite never loads the driver (9 MiB
        # of its RSS, whose floor bench/edge.py checks)
        import psycopg

        loop = asyncio.get_running_loop()
        if self._pg_loop is not loop:  # a connection belongs to the loop that made it
            self._close_pg()
            self._pg_loop, self._pg_lock = loop, asyncio.Lock()
        async with self._pg_lock:
            try:
                if self._pg is None or self._pg.closed:
                    self._pg = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                        application_name=APPLICATION_NAME)
                cursor = await self._pg.execute(sql, dict(parameters))
                return await cursor.fetchall()
            except psycopg.Error as exc:
                self._close_pg()
                raise LoopReadFailed(str(exc)) from exc

    def _close_pg(self) -> None:
        if self._pg is not None:
            self._pg.pgconn.finish()  # libpq's close: needs no event loop
            self._pg = None

    def _close_sqlite(self) -> None:
        if self._sqlite_connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._sqlite_connection.close()
            self._sqlite_connection = None

    def close(self) -> None:
        self._close_pg()
        self._close_sqlite()


def _locked(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: the connection is fine, the database is locked now."""
    code = getattr(exc, "sqlite_errorcode", None)  # none from the driver's own (a closed one)
    return code is not None and (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
