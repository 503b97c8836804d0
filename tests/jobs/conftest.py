"""Fixtures of the job tests: a cluster named `test` behind a FakeScheduler, two members with
accounts there, an allocation each, and an app wired to them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from factories import auth_headers
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import CLUSTER, World, cluster_config, make_world
from sqlalchemy.orm import Session

from consortium.models import User
from gateway.api.app import create_app
from gateway.db import Database
from gateway.jobs.config import JobsSettings
from gateway.settings import Settings
from schedulers.config import ClusterConfig


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    return cluster_config(tmp_path / "cluster")


@pytest.fixture
def fake(config: ClusterConfig) -> FakeScheduler:
    return FakeScheduler(config)


@pytest.fixture
def jobs_settings() -> JobsSettings:
    return JobsSettings(tracker_in_serve=False, stream_poll_seconds=0.02,
                        stream_max_seconds=5.0)


@pytest.fixture
def settings(settings: Settings, config: ClusterConfig, jobs_settings: JobsSettings) -> Settings:
    """The suite's settings, with the `test` cluster and quick streams."""
    return settings.model_copy(update={"clusters": [config], "jobs": jobs_settings})


@pytest.fixture
def world(session: Session) -> World:
    return make_world(session)


@pytest.fixture
def client(settings: Settings, database: Database, fake: FakeScheduler) -> Iterator[TestClient]:
    app = create_app(settings, database=database, schedulers={CLUSTER: fake})
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def as_(settings: Settings) -> Callable[[User], dict[str, str]]:
    return lambda user: auth_headers(settings, user)


@pytest.fixture
def committed(fresh_database: Database, settings: Settings,
              fake: FakeScheduler) -> Iterator[tuple[World, TestClient]]:
    """A database really committed to (other connections see each commit), and an app on it."""
    with fresh_database.transaction() as session:
        world = make_world(session)
    app = create_app(settings, database=fresh_database, schedulers={CLUSTER: fake})
    with TestClient(app) as client:
        yield world, client
