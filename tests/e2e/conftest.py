"""End to end on the project's Slurm test cluster, through the real API: create_app on a real
database (committed to: trackers, requests and other processes share it), the slurm_ssh
backend, the trackers of the app's lifespan, members on the cluster's accounts hpcm_alpha and
hpcm_beta. A test that needs the cluster and does not find it up FAILS, it is never skipped."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2e_helpers import World, make_world
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.db import Database
from gateway.jobs.config import JobsSettings
from gateway.settings import Settings
from schedulers.config import ClusterConfig, PartitionConfig

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "docs/examples/testcluster.toml"
# quick trackers and streams; a job lost by its submitter is looked up after 30 s, longer
# than any submission of these tests lasts
E2E_JOBS = JobsSettings(tracker_interval_seconds=0.5, tracker_max_backoff_seconds=2.0,
                        tracker_lease_seconds=30.0, submit_grace_seconds=30.0,
                        marker_grace_seconds=120.0, stream_poll_seconds=0.2,
                        stream_max_seconds=150.0, retry_after_seconds=30)


@pytest.fixture(scope="session")
def cluster_config(testcluster: Cluster) -> ClusterConfig:
    """The documented example's partitions (limits and billing weights as slurm.conf has
    them) with the running cluster's address, host key, admin and member identities."""
    example = tomllib.loads(EXAMPLE_CONFIG.read_text())["clusters"][0]
    return testcluster.config(
        partitions=[PartitionConfig(**p) for p in example["partitions"]],
        slurm_billing_scale=example["slurm_billing_scale"])


@pytest.fixture
def settings(settings: Settings, cluster_config: ClusterConfig) -> Settings:
    return settings.model_copy(update={"clusters": [cluster_config], "jobs": E2E_JOBS})


@pytest.fixture
def world(fresh_database: Database, testcluster: Cluster) -> World:
    return make_world(fresh_database, testcluster)


@pytest.fixture
def gateway(settings: Settings, fresh_database: Database, world: World) -> Iterator[TestClient]:
    """The API with its lifespan: templates seeded, one tracker per cluster running, the
    slurm_ssh scheduler built from the settings (app.state.schedulers)."""
    app = create_app(settings, database=fresh_database)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def restore_cluster(testcluster: Cluster) -> Iterator[Cluster]:
    """For the tests that stop a daemon: the cluster is brought back up whatever happens."""
    try:
        yield testcluster
    finally:
        testcluster.control("up")
