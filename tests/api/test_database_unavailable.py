"""A database that does not answer (stopped, restarting, its pool exhausted) is a 503
problem+json `database-unavailable` with Retry-After (an error page for the pages), never a
500; a failing statement is still a bug (500)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_process import free_port
from sqlalchemy import exc as sa_errors
from sqlalchemy.pool import QueuePool

from gateway.api.app import create_app
from gateway.auth.sessions import issue_access_token
from gateway.db import DATABASE_RETRY_AFTER_SECONDS, Database, unavailable
from gateway.settings import Settings
from gateway.ui.auth import SESSION_COOKIE

PROBLEM = "application/problem+json"


def _client(settings: Settings, database: Database) -> TestClient:
    # no lifespan (it would seed the templates in the database); Starlette re-raises what its
    # last-resort handler answered, the client must not
    return TestClient(create_app(settings, database=database), raise_server_exceptions=False)


def _assert_unavailable(client: TestClient, settings: Settings) -> None:
    answer = client.get("/api/v1/members",
                        headers={"Authorization": f"Bearer {issue_access_token(settings, 1)}"})
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert answer.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
    body = answer.json()
    assert body["type"] == "/problems/database-unavailable"
    assert body["request_id"]  # to quote, as for any error
    assert answer.headers["x-request-id"] == body["request_id"]  # though outside the middleware


@pytest.fixture
def stopped() -> Iterator[Database]:
    """A PostgreSQL URL on a port nobody listens on: as a server that was stopped."""
    database = Database(f"postgresql+psycopg://hpcgw@127.0.0.1:{free_port()}/hpcgw"
                        "?connect_timeout=2", pool_pre_ping=False)
    yield database
    database.dispose()


def test_a_stopped_database_is_a_503_with_retry_after(
        settings: Settings, stopped: Database) -> None:
    _assert_unavailable(_client(settings, stopped), settings)


def test_a_page_is_an_error_page_503_with_retry_after(
        settings: Settings, stopped: Database) -> None:
    client = _client(settings, stopped)
    client.cookies.set(SESSION_COOKIE, issue_access_token(settings, 1))
    answer = client.get("/ui/jobs")
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)


def test_an_exhausted_pool_is_a_503_with_retry_after(settings: Settings, tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'pool.db'}", poolclass=QueuePool, pool_size=1,
                        max_overflow=0, pool_timeout=0.2)
    held = database.engine.connect()  # the pool's one connection, taken
    try:
        _assert_unavailable(_client(settings, database), settings)
    finally:
        held.close()
        database.dispose()


def test_only_connection_level_errors_are_unavailability() -> None:
    cause = Exception("boom")
    assert unavailable(sa_errors.OperationalError("SELECT 1", {}, cause)) is not None
    assert unavailable(sa_errors.InterfaceError("SELECT 1", {}, cause)) is not None
    assert unavailable(sa_errors.DBAPIError("SELECT 1", {}, cause,
                                            connection_invalidated=True)) is not None
    assert unavailable(sa_errors.TimeoutError("pool")) is not None
    # a statement the database refused is a bug of ours, not an outage
    assert unavailable(sa_errors.IntegrityError("INSERT", {}, cause)) is None
    assert unavailable(sa_errors.ProgrammingError("SELECT", {}, cause)) is None
    assert unavailable(ValueError("boom")) is None
