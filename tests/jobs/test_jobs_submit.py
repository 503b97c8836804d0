"""POST /api/v1/jobs: the order of work, the refusals, and every way the cluster can answer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import CLUSTER, World, cycle, job_body, submit, transactions_of
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.base import utcnow
from consortium.models import AuditEvent, ClusterIdentity, Outcome, User
from gateway.auth.principal import principal_for_user
from gateway.db import Database
from gateway.jobs import outcomes
from gateway.jobs.models import Job, JobState
from gateway.jobs.schemas import JobCreate
from gateway.jobs.service import JobService
from gateway.settings import Settings
from quotas.models import Hold, HoldState
from schedulers.errors import SchedulerRejected, SchedulerTimeout, SchedulerUnavailable
from schedulers.models import JobSpec

Headers = Callable[[User], dict[str, str]]


def hold_of(session: Session, public_id: str) -> Hold:
    session.expire_all()
    return session.scalars(select(Hold).where(Hold.job_id == public_id)).one()


def job_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Job)) or 0)


# --- the order of work -------------------------------------------------------------------

def test_job_and_hold_are_committed_before_the_scheduler_is_called(
        committed: tuple[World, TestClient], fresh_database: Database, fake: FakeScheduler,
        as_: Headers) -> None:
    world, client = committed
    seen: list[tuple[str, str, int]] = []

    def check_committed(spec: JobSpec) -> None:
        # another connection sees the job `submitting` and its open hold: both committed
        other = Database(fresh_database.url)
        try:
            with other.session() as session:
                job = session.scalars(select(Job).where(Job.marker == spec.marker)).one()
                hold = session.scalars(select(Hold).where(Hold.job_id == job.public_id)).one()
                seen.append((job.state.value, hold.state.value, hold.amount_msu))
        finally:
            other.dispose()

    fake.on_submit = check_committed
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 201, answer.text
    assert seen == [("submitting", "open", 250)]  # 1 CPU at 0.25 SU/h for one hour
    job = answer.json()
    assert job["state"] == "pending" and job["scheduler_id"] == fake.only().id
    assert [e["to_state"] for e in job["events"]] == ["accepted", "submitting", "pending"]
    assert job["quote_msu"] == 250 and job["marker"] == f"hpcgw:{CLUSTER}:{job['id']}"
    assert fake.only().spec.marker == job["marker"]


def test_a_submission_writes_once_before_the_scheduler_call_and_once_after(
        client: TestClient, world: World, fake: FakeScheduler, as_: Headers) -> None:
    """Job `accepted` and `submitting`, hold and audit in the one transaction that commits
    before sbatch; the Slurm id and the answer read in the one after it."""
    with transactions_of(client, fake) as log:
        answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 201, answer.text
    assert log == ["write", "sbatch", "write"]
    assert [e["to_state"] for e in answer.json()["events"]] == [
        "accepted", "submitting", "pending"]


def test_a_lost_answer_is_stored_as_unknown_and_read_in_one_transaction(
        client: TestClient, world: World, fake: FakeScheduler, as_: Headers) -> None:
    fake.lost_answer = SchedulerTimeout("no answer within 30 s")
    with transactions_of(client, fake) as log:
        answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 202 and answer.json()["state"] == "unknown", answer.text
    assert log == ["write", "sbatch", "write"]


def test_submission_records_the_request_and_an_audit_event(
        client: TestClient, world: World, session: Session, fake: FakeScheduler,
        as_: Headers) -> None:
    answer = submit(client, as_(world.researcher), "acme/vision", name="bert-finetune",
                    environment={"EPOCHS": "3"}, workdir="runs/one",
                    resources={"partition": "gpu", "gpus": 2, "cpus_per_task": 8,
                               "mem_mb": 32768, "time_limit_minutes": 90})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["project_id"] == world.project.id and job["member_id"] == world.acme.id
    assert job["resources"]["gpus"] == 2 and job["workdir"] == "runs/one"
    assert job["quote_msu"] == 3000  # 2 GPUs for 1.5 h
    assert job["stdout_path"] == f"runs/one/hpcgw-{job['id']}.out"
    spec = fake.only().spec
    assert spec.environment == {"EPOCHS": "3"} and spec.workdir == "runs/one"
    assert spec.account is not None and spec.resources.gpus == 2
    session.expire_all()
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "job.submit")).one()
    assert event.target_id == job["id"] and event.outcome == Outcome.success


def test_the_first_cluster_is_the_default_and_an_unknown_one_is_a_field_error(
        client: TestClient, world: World, as_: Headers) -> None:
    assert submit(client, as_(world.researcher), world.project).json()["cluster"] == CLUSTER
    answer = submit(client, as_(world.researcher), world.project, cluster="elsewhere")
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["body", "cluster"]


# --- bad input: 422 with field paths -----------------------------------------------------

@pytest.mark.parametrize(("change", "loc"), [
    ({"resources": {"partition": "cpu", "mem_mb": 1024}}, ["body", "resources",
                                                           "time_limit_minutes"]),
    ({"resources": {"partition": "cpu", "mem_mb": 1024, "time_limit_minutes": 121}},
     ["body", "resources", "time_limit_minutes"]),
    ({"resources": {"partition": "cpu", "cpus_per_task": 4, "ntasks": 4, "mem_mb": 1024,
                    "time_limit_minutes": 60}}, ["body", "resources", "cpus_per_task"]),
    ({"resources": {"partition": "cpu", "gpus": 1, "mem_mb": 1024,
                    "time_limit_minutes": 60}}, ["body", "resources", "gpus"]),
    ({"resources": {"partition": "cpu", "mem_mb": 99999, "time_limit_minutes": 60}},
     ["body", "resources", "mem_mb"]),
    ({"resources": {"partition": "bigmem", "mem_mb": 1024, "time_limit_minutes": 60}},
     ["body", "resources", "partition"]),
    ({"environment": {"1BAD": "x"}}, ["body", "environment", "1BAD", "[key]"]),
    ({"environment": {"SLURM_JOB_ID": "x"}}, ["body", "environment", "SLURM_JOB_ID", "[key]"]),
    ({"workdir": "../other-member"}, ["body", "workdir"]),
    ({"workdir": "/etc"}, ["body", "workdir"]),
    ({"name": "bad name; rm -rf"}, ["body", "name"]),
])
def test_bad_input_is_422_with_the_field_path(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session, change: dict[str, object], loc: list[str]) -> None:
    answer = submit(client, as_(world.researcher), world.project, **change)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert loc in [e["loc"] for e in answer.json()["errors"]]
    assert fake.calls["submit"] == 0 and job_count(session) == 0


def test_script_and_template_together_are_refused(client: TestClient, world: World,
                                                  as_: Headers) -> None:
    answer = submit(client, as_(world.researcher), world.project, template="generic-script",
                    parameters={"script": "run.sh"})
    assert answer.status_code == 422


# --- policy refusals ---------------------------------------------------------------------

def test_a_templates_only_member_cannot_submit_a_script(
        client: TestClient, world: World, as_: Headers, session: Session) -> None:
    world.acme.templates_only = True
    session.flush()
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 403
    assert "templates only" in answer.json()["detail"]
    assert job_count(session) == 0
    session.expire_all()
    denied = session.scalars(select(AuditEvent).where(AuditEvent.action == "job.submit")).one()
    assert denied.outcome == Outcome.denied and denied.member_id == world.acme.id


def test_a_partition_the_member_may_not_use_is_refused(
        client: TestClient, world: World, as_: Headers, session: Session) -> None:
    account = session.scalars(select(ClusterIdentity).where(
        ClusterIdentity.member_id == world.acme.id)).one()
    account.allowed_partitions = ["gpu"]
    session.flush()
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 403
    assert "partition cpu" in answer.json()["detail"]


def test_the_active_job_cap_is_a_conflict(client: TestClient, world: World, as_: Headers,
                                          session: Session) -> None:
    world.acme.max_active_jobs = 2
    session.flush()
    for _ in range(2):
        assert submit(client, as_(world.researcher), world.project).status_code == 201
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 409
    assert answer.json()["type"] == "/problems/too-many-jobs"


def test_a_viewer_cannot_submit_and_a_stranger_cannot_see_the_project(
        client: TestClient, world: World, as_: Headers) -> None:
    assert submit(client, as_(world.viewer), world.project).status_code == 403
    assert submit(client, as_(world.stranger), world.project).status_code == 404
    assert submit(client, as_(world.stranger), "acme/vision").status_code == 404


def test_an_archived_project_takes_no_jobs(client: TestClient, world: World, as_: Headers,
                                           session: Session) -> None:
    from consortium.models import ProjectStatus

    world.project.status = ProjectStatus.archived
    session.flush()
    assert submit(client, as_(world.researcher), world.project).status_code == 409


def test_quota_refusal_is_403_with_requested_available_and_held(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    # 10 SU granted: one 2-GPU job for 4 h holds 8 SU, a second asks 8 more
    big = {"partition": "gpu", "gpus": 2, "mem_mb": 1024, "time_limit_minutes": 240}
    assert submit(client, as_(world.researcher), world.project, resources=big).status_code == 201
    answer = submit(client, as_(world.researcher), world.project, resources=big)
    assert answer.status_code == 403
    problem = answer.json()
    assert problem["type"] == "/problems/quota-exceeded"
    assert (problem["requested_msu"], problem["available_msu"], problem["held_msu"]) == (
        8000, 2000, 8000)
    assert job_count(session) == 1 and fake.calls["submit"] == 1  # nothing left behind


# --- what the cluster answers ------------------------------------------------------------

def test_a_slurm_refusal_fails_the_job_releases_the_hold_and_shows_slurms_words(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    fake.submit_error = SchedulerRejected(
        "sbatch: error: Batch job submission failed: Invalid account or account/partition "
        "combination specified")
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["type"] == "/problems/scheduler-rejected"
    assert "Invalid account" in problem["detail"]
    job = session.scalars(select(Job).where(Job.public_id == problem["job"])).one()
    session.refresh(job)
    assert job.state == JobState.submit_failed and "Invalid account" in (job.detail or "")
    assert hold_of(session, job.public_id).state == HoldState.released


def test_a_slurm_limit_refusal_is_a_conflict(client: TestClient, world: World, as_: Headers,
                                             fake: FakeScheduler) -> None:
    fake.submit_error = SchedulerRejected("sbatch: error: QOSMaxSubmitJobPerUserLimit")
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 409
    assert answer.json()["type"] == "/problems/scheduler-limit"


def test_an_unreachable_cluster_is_503_with_retry_after_and_the_hold_released(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    fake.down = True
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "30"
    public_id = answer.json()["job"]
    session.expire_all()
    job = session.scalars(select(Job).where(Job.public_id == public_id)).one()
    assert job.state == JobState.submit_failed
    assert hold_of(session, public_id).state == HoldState.released


def test_a_lost_answer_is_202_unknown_then_the_tracker_finds_the_job_by_marker(
        *, client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler, database: Database, settings: Settings) -> None:
    fake.lost_answer = SchedulerTimeout("no answer within 30 s")
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 202
    job = answer.json()
    assert job["state"] == "unknown" and job["scheduler_id"] is None
    assert hold_of(session, job["id"]).state == HoldState.open
    report = cycle(database, fake, settings)
    assert report.marker_lookups == 1
    found = client.get(f"/api/v1/jobs/{job['id']}", headers=as_(world.researcher)).json()
    assert found["state"] == "pending" and found["scheduler_id"] == fake.only().id
    assert fake.calls["submit"] == 1  # never submitted twice


def test_an_unknown_job_the_cluster_never_got_fails_after_the_grace_and_is_released(
        *, client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler, database: Database, settings: Settings) -> None:
    fake.submit_error = SchedulerUnavailable("connection reset after sending",
                                             maybe_executed=True)
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 202
    public_id = answer.json()["id"]
    # within the grace the tracker keeps looking
    assert cycle(database, fake, settings).changes == []
    later = cycle(database, fake, settings, clock=lambda: utcnow() + timedelta(hours=1))
    assert later.changes == [(public_id, JobState.unknown, JobState.submit_failed)]
    assert hold_of(session, public_id).state == HoldState.released


def test_a_submitter_that_died_leaves_a_row_the_tracker_settles(
        *, client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler, database: Database, settings: Settings) -> None:
    """A crash after sbatch returned and before the id was stored: one job, found again."""
    answer = submit(client, as_(world.researcher), world.project)
    public_id = answer.json()["id"]
    job = session.scalars(select(Job).where(Job.public_id == public_id)).one()
    session.refresh(job)
    job.state, job.scheduler_id = JobState.submitting, None  # as the crash left it
    session.flush()
    assert cycle(database, fake, settings).marker_lookups == 0  # the submitter may be at work
    later = cycle(database, fake, settings, clock=lambda: utcnow() + timedelta(minutes=10))
    assert later.changes == [(public_id, JobState.submitting, JobState.pending)]
    session.refresh(job)
    assert job.scheduler_id == fake.only().id and fake.calls["submit"] == 1


def test_a_submitter_that_died_before_sbatch_leaves_a_hold_the_tracker_releases(
        *, client: TestClient, world: World, session: Session, fake: FakeScheduler,
        database: Database, settings: Settings) -> None:
    """The first commit already says `submitting`: a crash before the script left is settled
    by marker too (no job carries it: submit_failed, hold released), never sent again."""
    service: JobService = client.app.state.jobs  # type: ignore[attr-defined]
    principal = principal_for_user(session, world.researcher)
    with database.transaction() as tx:  # what the submission's first transaction commits
        accepted = service._accept(tx, principal, JobCreate.model_validate(
            job_body(world.project)), RequestContext(), None, submitting=True)
    public_id = accepted.public_id
    assert cycle(database, fake, settings).marker_lookups == 0  # the submitter may be at work
    later = cycle(database, fake, settings, clock=lambda: utcnow() + timedelta(hours=1))
    assert later.changes == [(public_id, JobState.submitting, JobState.submit_failed)]
    assert hold_of(session, public_id).state == HoldState.released
    assert fake.calls["submit"] == 0


def test_environment_and_workdir_reach_the_scheduler(tmp_path: Path) -> None:
    body = job_body(1, environment={"A": "1"}, workdir="a/./b")
    assert JobCreate.model_validate(body).workdir == "a/b"


def test_a_job_the_tracker_gave_up_is_cancelled_on_the_cluster_when_its_id_comes_back(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database) -> None:
    """No Slurm job may outlive its row's hope: if the tracker declared the submission failed
    while sbatch was still answering, the job it returns is cancelled at once."""
    def tracker_gives_up(spec: JobSpec) -> None:
        with database.transaction() as tx:
            job = tx.scalars(select(Job).where(Job.marker == spec.marker)).one()
            job.state = JobState.submit_failed

    fake.on_submit = tracker_gives_up
    submit(client, as_(world.researcher), world.project)
    assert fake.cancelled == [fake.only().id]


def test_an_id_the_tracker_already_stored_is_kept(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database) -> None:
    public_id = submit(client, as_(world.researcher), world.project).json()["id"]
    with database.transaction() as tx:
        job = tx.scalars(select(Job).where(Job.public_id == public_id)).one()
        assert outcomes.submitted(tx, job, fake.only().id) == (True, False, None)
    assert fake.cancelled == []
