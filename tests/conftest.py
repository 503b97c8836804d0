"""Shared fixtures: real databases built by the migrations, one rolled-back transaction a test.

HPCGW_TEST_DB=sqlite (default) or postgresql selects the database; the PostgreSQL server is
the Debian package, started by scripts/postgres.sh when it is not running (and stopped again
at the end if this run started it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session
from testcluster_helpers import TESTCLUSTER, Cluster, parse_env

from gateway import migrations
from gateway.api.app import create_app
from gateway.db import Database, make_engine
from gateway.logging import configure_logging
from gateway.settings import Settings
from gateway.webhooks.config import WebhookSettings

ROOT = Path(__file__).resolve().parent.parent
DB_KIND = os.environ.get("HPCGW_TEST_DB", "sqlite")
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"
IN_CI = bool(os.environ.get("CI"))
TEST_SECRET = "test-secret-" + "x" * 40

# The service's own log format: structlog's default renderer formats tracebacks with rich, which
# costs seconds per error under load.
configure_logging("WARNING", json=True)

# Skips that do not hide a missing service: the only ones allowed in CI.
ALLOWED_CI_SKIPS = ("pyslurm",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not any(k in item.keywords for k in ALLOWED_CI_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (a missing service is a failure): {report.longrepr}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, only the tests that use a test database (every database fixture stands on
    `database_factory`): the others, the demo's browser pages on its embedded SQLite among them,
    would run exactly as in the SQLite run, which runs every test."""
    if DB_KIND != "postgresql":
        return
    kept = [item for item in items if "database_factory" in getattr(item, "fixturenames", ())]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class _DatabaseFactory:
    """Makes migrated databases: the first by `alembic upgrade head`, the others copied from it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.created: list[str] = []
        self._admin: Engine | None = None
        self.template = self._new_name()
        if DB_KIND == "postgresql":
            self._admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.template}"'))
            self.created.append(self.template)
        migrations.upgrade(self.url(self.template))

    def _new_name(self) -> str:
        return f"hpcgw_test_{_worker()}_{uuid.uuid4().hex[:10]}"

    def url(self, name: str) -> str:
        if DB_KIND == "postgresql":
            return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        return f"sqlite:///{self.tmp / name}.db"

    def fresh(self) -> str:
        """A new database with the schema at head (no rows), really committed to."""
        name = self._new_name()
        if DB_KIND == "postgresql":
            assert self._admin is not None
            with self._admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
            self.created.append(name)
        else:
            shutil.copy(self.tmp / f"{self.template}.db", self.tmp / f"{name}.db")
        return self.url(name)

    def empty(self) -> str:
        """A new database with no schema at all (for `hpcgw db upgrade`); SQLite: no file yet."""
        name = self._new_name()
        if DB_KIND == "postgresql":
            assert self._admin is not None
            with self._admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            self.created.append(name)
        return self.url(name)

    def drop_all(self) -> None:
        if self._admin is None:
            return
        with self._admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


def _ensure_postgres() -> bool:
    """Start the test server if needed; True if this run started it."""
    script = ROOT / "scripts/postgres.sh"
    status = subprocess.run([script, "status"], check=False, capture_output=True)
    if status.returncode == 0:
        return False
    subprocess.run([ROOT / "scripts/postgres.sh", "up"], check=True)
    return True


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_DatabaseFactory]:
    started = _ensure_postgres() if DB_KIND == "postgresql" else False
    factory = _DatabaseFactory(tmp_path_factory.mktemp("db"))
    yield factory
    factory.drop_all()
    if started:
        subprocess.run([ROOT / "scripts/postgres.sh", "down"], check=False)


@pytest.fixture(scope="session")
def shared_engine(database_factory: _DatabaseFactory) -> Iterator[Engine]:
    engine = make_engine(database_factory.fresh())
    yield engine
    engine.dispose()


class RollbackDatabase(Database):
    """Every session joins the test's outer transaction through savepoints; nothing lands."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(str(connection.engine.url), engine=connection.engine)
        self.connection = connection

    def session(self, *, write: bool = False) -> Session:
        return Session(bind=self.connection, join_transaction_mode="create_savepoint",
                       expire_on_commit=False)

    def dispose(self) -> None:
        pass


@pytest.fixture
def database(shared_engine: Engine) -> Iterator[Database]:
    """The test's database: real schema, committed by the code under test, rolled back after."""
    with shared_engine.connect() as connection:
        outer = connection.begin()
        yield RollbackDatabase(connection)
        outer.rollback()


@pytest.fixture
def fresh_database(database_factory: _DatabaseFactory) -> Iterator[Database]:
    """A database of its own, really committed to: for races, restarts and several processes."""
    db = Database(database_factory.fresh())
    yield db
    db.dispose()


@pytest.fixture
def empty_database_url(database_factory: _DatabaseFactory) -> str:
    """The URL of a database without any table, dropped at the end of the session."""
    return database_factory.empty()


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    with database.session(write=True) as s:
        yield s
        s.flush()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        secret_key=TEST_SECRET,
        data_dir=tmp_path,
        base_url="http://testserver",
        log_json=True,
        # the webhook worker would use the test's shared connection from another thread
        webhooks=WebhookSettings(worker_in_serve=False),
    )


@pytest.fixture
def app_client(settings: Settings, database: Database) -> Iterator[TestClient]:
    app = create_app(settings, database=database)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def testcluster() -> Cluster:
    """The project's Slurm test cluster as `scripts/testcluster.sh env` describes it. A test that
    needs it and does not find it up FAILS, it is never skipped."""
    try:
        status = subprocess.run([TESTCLUSTER, "status"], capture_output=True, text=True,
                                timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot ask the Slurm test cluster for its status: {exc}", pytrace=False)
    if status.returncode != 0:
        pytest.fail("the Slurm test cluster is not up; start it with "
                    f"`sudo scripts/testcluster.sh up`:\n{status.stdout}{status.stderr}",
                    pytrace=False)
    out = subprocess.run([TESTCLUSTER, "env"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return Cluster(parse_env(out))
