"""Helpers of the job tests: the `test` cluster's configuration, the cast, submitting, and
running one tracker cycle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
from factories import make_member, make_project, make_user
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import Member, Project, Role, User
from gateway.db import Database
from gateway.jobs.clusters import Cluster
from gateway.jobs.tracker import ClusterTracker, CycleReport
from gateway.settings import Settings
from quotas import service as quotas
from quotas.models import AllocationKind
from schedulers.base import Scheduler
from schedulers.config import BillingWeights, ClusterConfig, PartitionConfig

CLUSTER = "test"
CPU_WEIGHTS = BillingWeights(gpu=1.0, cpu=0.25, mem_gb=0.0625)
# the gpu partition's whole CPU (64) or memory (256 GiB) limit costs as much as its 8 GPUs
GPU_WEIGHTS = BillingWeights(gpu=1.0, cpu=0.125, mem_gb=0.03125)


def cluster_config(root: Path, *, backend: str = "local", name: str = CLUSTER) -> ClusterConfig:
    return ClusterConfig(
        name=name, backend=backend, local_root=root, work_root=str(root / "work" / "{unix_user}"),
        cpu_slots=2,
        partitions=[
            PartitionConfig(name="cpu", max_time_minutes=120, max_nodes=2, max_cpus_per_job=8,
                            max_mem_mb_per_job=16 * 1024, billing=CPU_WEIGHTS),
            PartitionConfig(name="gpu", max_time_minutes=1440, max_nodes=4, max_cpus_per_job=64,
                            max_gpus_per_job=8, max_mem_mb_per_job=256 * 1024,
                            billing=GPU_WEIGHTS),
        ])


@dataclass
class World:
    acme: Member
    globex: Member
    project: Project  # acme's
    other_project: Project  # globex's
    researcher: User  # acme
    viewer: User  # acme
    manager: User  # acme
    stranger: User  # globex's researcher
    admin: User


def grant(session: Session, member: Member, su: int) -> None:
    now = utcnow()
    quotas.grant(session, member_id=member.id, amount_msu=su * 1000,
                 kind=AllocationKind.grant, starts_at=now - timedelta(days=1),
                 ends_at=now + timedelta(days=30), actor="admin@consortium.test")


def make_world(session: Session, *, grant_su: int = 10) -> World:
    acme = make_member(session, "acme", cluster=CLUSTER)
    globex = make_member(session, "globex", cluster=CLUSTER)
    world = World(
        acme=acme, globex=globex,
        project=make_project(session, acme, "vision"),
        other_project=make_project(session, globex, "secret"),
        researcher=make_user(session, email="researcher@acme.test",
                             roles={acme: Role.researcher}),
        viewer=make_user(session, email="viewer@acme.test", roles={acme: Role.viewer}),
        manager=make_user(session, email="manager@acme.test", roles={acme: Role.manager}),
        stranger=make_user(session, email="researcher@globex.test",
                           roles={globex: Role.researcher}),
        admin=make_user(session, email="admin@consortium.test", admin=True),
    )
    for member in (acme, globex):
        grant(session, member, grant_su)
    session.flush()
    return world


def job_body(project: Project | int | str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project": project.id if isinstance(project, Project) else project,
        "name": "train",
        "script": "#!/bin/bash\necho hello\n",
        "resources": {"partition": "cpu", "mem_mb": 1024, "time_limit_minutes": 60},
    }
    body.update(overrides)
    return body


def submit(client: TestClient, headers: dict[str, str], project: Project | int | str,
           **overrides: Any) -> Response:
    return client.post("/api/v1/jobs", headers=headers, json=job_body(project, **overrides))


@contextmanager
def transactions_of(client: TestClient, fake: FakeScheduler) -> Iterator[list[str]]:
    """The transactions the app's JobService opens ("write" or "read"), with "sbatch" where
    the scheduler's submit was called: the shape of a submission's work."""
    log: list[str] = []
    service = client.app.state.jobs  # type: ignore[attr-defined]
    database: Database = service.database

    @contextmanager
    def transaction(*, write: bool = True) -> Iterator[Session]:
        log.append("write" if write else "read")
        with database.transaction(write=write) as session:
            yield session

    fake.on_submit = lambda spec: log.append("sbatch")
    service.database = SimpleNamespace(transaction=transaction)
    try:
        yield log
    finally:
        service.database = database
        fake.on_submit = None


def cycle(database: Database, fake: Scheduler, settings: Settings, *,
          clock: Callable[[], datetime] | None = None, holder: str = "tester") -> CycleReport:
    """One tracker cycle, run to its end."""
    tracker = ClusterTracker(database, Cluster(fake.config, fake), settings.jobs, holder=holder,
                             **({"clock": clock} if clock else {}))
    return anyio.run(tracker.cycle)
