"""Fixtures of the webhook tests: the job tests' `test` cluster behind their FakeScheduler, a
world of two members on a database really committed to, a real receiver on 127.0.0.1, and
settings that let webhooks reach it (loopback is refused otherwise)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from factories import auth_headers
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from consortium.models import User
from gateway.api.app import create_app
from gateway.db import Database
from gateway.jobs.config import JobsSettings
from gateway.settings import Settings
from gateway.webhooks.config import WebhookSettings
from schedulers.config import ClusterConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from fake_scheduler import FakeScheduler
from jobs_helpers import CLUSTER, World, cluster_config, make_world
from webhook_helpers import LOOPBACK, Receiver, Served, receiver


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    return cluster_config(tmp_path / "cluster")


@pytest.fixture
def fake(config: ClusterConfig) -> FakeScheduler:
    return FakeScheduler(config)


@pytest.fixture
def settings(settings: Settings, config: ClusterConfig) -> Settings:
    return settings.model_copy(update={
        "clusters": [config], "jobs": JobsSettings(tracker_in_serve=False),
        "webhooks": LOOPBACK})


@pytest.fixture
def strict_settings(settings: Settings) -> Settings:
    """The defaults: no private target allowed."""
    return settings.model_copy(update={"webhooks": WebhookSettings(worker_in_serve=False)})


@pytest.fixture
def as_(settings: Settings) -> Callable[[User], dict[str, str]]:
    return lambda user: auth_headers(settings, user)


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as state:
        yield state


@pytest.fixture
def served(fresh_database: Database, settings: Settings,
           fake: FakeScheduler) -> Iterator[Served]:
    """The app on a database of its own (the worker and the tracker see every commit); its
    delivery worker is off: tests run it when they want."""
    with fresh_database.transaction() as session:
        world = make_world(session)
    app = create_app(settings, database=fresh_database, schedulers={CLUSTER: fake})
    with TestClient(app) as client:
        yield Served(world, client, fresh_database)


@pytest.fixture
def world(session: Session) -> World:
    return make_world(session)


@pytest.fixture
def client(settings: Settings, database: Database, fake: FakeScheduler) -> Iterator[TestClient]:
    """The app on the test's rolled-back database (for the routes: no worker, no tracker)."""
    app = create_app(settings, database=database, schedulers={CLUSTER: fake})
    with TestClient(app) as test_client:
        yield test_client
