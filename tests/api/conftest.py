"""Fixtures of the API tests: a consortium where every object a path names exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_world import CLUSTER, FakeScheduler, Seeded, cluster_config, seed, seeded_settings
from fastapi.testclient import TestClient
from jobs_helpers import make_world
from sqlalchemy.orm import Session

from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings


@pytest.fixture
def seeded(settings: Settings, database: Database, session: Session,
           tmp_path: Path) -> Iterator[tuple[TestClient, Seeded]]:
    """An app on the `test` cluster (a FakeScheduler) and the objects seeded through it, as
    its consortium admin sees them."""
    configured = seeded_settings(settings, cluster_config(tmp_path / "cluster"))
    world = make_world(session)
    app = create_app(configured, database=database,
                     schedulers={CLUSTER: FakeScheduler(configured.clusters[0])})
    with TestClient(app) as client:
        yield client, seed(client, configured, world)
