"""The measured path, from sacct's own output to the stored job: Slurm's ConsumedEnergyRaw
(empty, 0, NO_VAL64, large integers, step lines) parsed, then taken by the tracker at
settlement only for nodes a job had to itself; per array task too. The test cluster has no
energy counter: fixtures/README.md says how sacct_energy.txt was made."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from factories import make_member, make_project, make_user
from footprint_helpers import CLUSTER, cluster
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import Member, Role
from gateway.db import Database
from gateway.jobs.clusters import Cluster
from gateway.jobs.config import JobsSettings
from gateway.jobs.models import Job, JobState, JobTask
from gateway.jobs.tracker import ClusterTracker
from gateway.jobs.views import energy_of
from quotas import service as quotas
from quotas.models import AllocationKind
from quotas.rates import Amounts
from schedulers.models import Identity
from schedulers.slurm_ssh.commands import Sacct
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler
from schedulers.slurm_ssh.transport import Result

FIXTURE = (Path(__file__).parent / "fixtures" / "sacct_energy.txt").read_bytes()
JOBS = ("900", "901", "902", "903", "904", "907")
_seq = itertools.count()


def test_consumed_energy_as_slurm_prints_it() -> None:
    records = Sacct([*JOBS, "905"]).parse(Result(FIXTURE, b"", 0))

    energy = {job_id: r.consumed_energy_joules for job_id, r in records.items()}
    assert energy == {"900": 1_800_000.0, "901": 900_000.0, "902": None, "903": None,
                      "904": None, "905_0": 720_000.0, "905_1": 360_000.0,
                      "907": 123_456_789_012.0}
    # the allocation's line, not its steps' (900.batch says 1700000)
    assert (records["900"].alloc_cpus, records["900"].alloc_gpus) == (4, 2)
    assert (records["907"].node_count, records["907"].alloc_cpus) == (2, 8)


class SacctOnly:
    """The transport of a cluster whose squeue no longer lists the jobs and whose sacct prints
    the fixture."""

    def __init__(self) -> None:
        self.commands: list[Sequence[str]] = []

    async def run(self, identity: Identity, argv: Sequence[str], **_: object) -> Result:
        self.commands.append(argv)
        return Result(FIXTURE if "sacct" in argv else b"", b"", 0)

    async def close(self) -> None:
        return None


def _job(session: Session, member: Member, project_id: int, user_id: int, scheduler_id: str,
         *, array: str | None = None, tasks: int = 1) -> Job:
    n = next(_seq)
    resources = {"gpus": 2, "ntasks": 1, "cpus_per_task": 8, "mem_mb": 8000, "nodes": 2,
                 "time_limit_minutes": 1440, "array": array}
    job = Job(public_id=f"job-energy-{n}", member_id=member.id, project_id=project_id,
              user_id=user_id, cluster=CLUSTER, name="train", state=JobState.running,
              marker=f"hpcgw-energy-{n}", scheduler_id=scheduler_id, partition="debug",
              resources=resources, script="#!/bin/bash\n", stdout_path="out",
              stderr_path="err", billing={"gpu": 1.0, "cpu": 0.25, "mem_gb": 0.0625},
              quote_msu=0, task_count=tasks, started_at=utcnow() - timedelta(hours=1))
    session.add(job)
    session.flush()
    held = quotas.hold(session, quotas.JobRef(job.public_id, member.id, project_id, user_id,
                                              CLUSTER, "debug"),
                       cluster().partitions[0].billing, Amounts(gpus=2, cpus=8, mem_mb=8000),
                       86400, tasks=tasks)
    job.quote_msu = held.amount_msu
    return job


@pytest.fixture
def settled(fresh_database: Database, tmp_path: Path) -> dict[str, Job | list[JobTask]]:
    config = cluster(root=tmp_path)
    with fresh_database.transaction() as session:
        member = make_member(session, "alpha", cluster=CLUSTER)
        project = make_project(session, member)
        user = make_user(session, roles={member: Role.researcher})
        now = utcnow()
        quotas.grant(session, member_id=member.id, amount_msu=10**9, kind=AllocationKind.grant,
                     starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30),
                     actor="admin")
        ids = {sid: _job(session, member, project.id, user.id, sid).id for sid in JOBS}
        ids["905"] = _job(session, member, project.id, user.id, "905", array="0-1",
                          tasks=2).id
    transport = SacctOnly()
    scheduler = SlurmSshScheduler(config, transport=transport)  # type: ignore[arg-type]
    tracker = ClusterTracker(fresh_database, Cluster(config, scheduler),
                             JobsSettings(tracker_in_serve=False))
    anyio.run(tracker.cycle)
    assert any("sacct" in argv for argv in transport.commands)
    with fresh_database.session() as session:
        found: dict[str, Job | list[JobTask]] = {
            sid: session.get_one(Job, job_id) for sid, job_id in ids.items()}
        found["905 tasks"] = list(session.scalars(
            select(JobTask).where(JobTask.job_id == ids["905"]).order_by(JobTask.task_id)))
        session.expunge_all()
    return found


def _one(found: dict[str, Job | list[JobTask]], key: str) -> Job:
    job = found[key]
    assert isinstance(job, Job)
    assert job.state.terminal
    return job


def test_a_whole_node_job_is_measured_and_a_shared_one_estimated(
        settled: dict[str, Job | list[JobTask]]) -> None:
    whole, shared = _one(settled, "900"), _one(settled, "901")

    assert (whole.energy_source, whole.energy_joules_measured) == ("measured", 1_800_000.0)
    assert whole.energy_kwh == pytest.approx(0.5 * 1.56)
    assert whole.carbon_g == pytest.approx(0.5 * 1.56 * 21.7)
    assert whole.energy_figures is not None and whole.energy_figures["cpus_per_node"] == 4
    shown = energy_of(whole)  # what GET /jobs/{id} answers
    assert (shown.source, shown.figures) == ("measured", whole.energy_figures)
    # the node's 0.25 kWh is not this 1-CPU job's: (12 + 1000/1024 x 0.3725) W x 2 h x 1.56
    assert shared.energy_source == "estimated"
    assert shared.energy_joules_measured == 900_000.0  # kept as Slurm gave it
    assert round((shared.energy_kwh or 0) * 1000) == round((12 + 1000 / 1024 * 0.3725) * 2
                                                            * 1.56)


def test_no_energy_plugin_and_slurms_no_value_are_estimated(
        settled: dict[str, Job | list[JobTask]]) -> None:
    for key in ("902", "904"):
        job = _one(settled, key)
        assert (job.energy_source, job.energy_joules_measured) == ("estimated", None)
        # (4 x 12 + 4000/1024 x 0.3725) W x 1 h x 1.56
        assert round((job.energy_kwh or 0) * 1000) == round((48 + 4000 / 1024 * 0.3725) * 1.56)
    never_ran = _one(settled, "903")
    assert (never_ran.energy_source, never_ran.energy_kwh) == ("estimated", 0.0)


def test_a_large_counter_on_two_whole_nodes_is_measured(
        settled: dict[str, Job | list[JobTask]]) -> None:
    job = _one(settled, "907")

    assert job.energy_source == "measured"
    assert job.energy_kwh == pytest.approx(123_456_789_012 / 3.6e6 * 1.56)


def test_an_arrays_tasks_each_have_theirs_and_the_job_the_weakest_label(
        settled: dict[str, Job | list[JobTask]]) -> None:
    tasks = settled["905 tasks"]
    assert isinstance(tasks, list)
    array = _one(settled, "905")

    assert [(t.task_id, t.energy_source) for t in tasks] == [(0, "measured"), (1, "estimated")]
    assert energy_of(tasks[1]).figures == tasks[1].energy_figures
    assert tasks[0].energy_kwh == pytest.approx(0.2 * 1.56)
    assert array.energy_source == "estimated"  # partly measured is not measured
    assert array.energy_kwh == pytest.approx(sum(t.energy_kwh or 0 for t in tasks))
    assert array.carbon_g == pytest.approx(sum(t.carbon_g or 0 for t in tasks))
    assert array.energy_figures == {"tasks": {"estimated": 1, "measured": 1}}
