"""The cluster down: refusals that executed nothing are not kept against an Idempotency-Key
(the retry that Retry-After invites runs anew), answers in doubt are (never a second sbatch),
and a cluster known to be unreachable is said so at once instead of after sbatch's timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import World, cycle, grant, job_body
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import User
from gateway.db import Database
from gateway.jobs import idempotency
from gateway.jobs.models import IdempotencyRecord, IdempotencyState, Job, JobState
from gateway.jobs.schemas import JobCreate
from gateway.settings import Settings
from schedulers.errors import SchedulerRejected, SchedulerTimeout, SchedulerUnavailable
from schedulers.models import JobSpec

Headers = Callable[[User], dict[str, str]]
BIG = {"partition": "gpu", "gpus": 2, "mem_mb": 1024, "time_limit_minutes": 240}  # 8 of 10 SU


def post(client: TestClient, headers: dict[str, str], key: str | None,
         body: dict[str, object]) -> tuple[int, dict[str, object], dict[str, str]]:
    extra = {"Idempotency-Key": key} if key else {}
    answer = client.post("/api/v1/jobs", headers={**headers, **extra}, json=body)
    return answer.status_code, answer.json(), dict(answer.headers)


def jobs_in(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def keys_in(session: Session) -> list[IdempotencyRecord]:
    return list(session.scalars(select(IdempotencyRecord)))


# --- 1. what is kept against the key --------------------------------------------------------

def test_a_503_is_not_kept_so_the_retry_after_the_cluster_is_back_is_submitted(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    fake.down = True
    status, problem, headers = post(client, as_(world.researcher), "k1", job_body(world.project))
    assert status == 503 and problem["type"] == "/problems/cluster-unavailable"
    assert headers["retry-after"] == "30"
    assert keys_in(session) == []  # nothing executed: nothing kept
    fake.down = False
    status, answer, _ = post(client, as_(world.researcher), "k1", job_body(world.project))
    assert status == 201 and answer["scheduler_id"] == fake.only().id
    (record,) = keys_in(session)
    assert (record.state, record.response_status) == (IdempotencyState.done, 201)
    # and from now on the key replays that job
    again = post(client, as_(world.researcher), "k1", job_body(world.project))
    assert again[:2] == (201, answer) and fake.calls["submit"] == 2 and len(fake.jobs) == 1


def test_a_quota_refusal_is_not_kept_so_the_retry_after_a_grant_is_accepted(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    assert post(client, as_(world.researcher), None, job_body(world.project, resources=BIG)
                )[0] == 201
    body = job_body(world.project, resources=BIG, name="second")
    status, problem, _ = post(client, as_(world.researcher), "k2", body)
    assert status == 403 and problem["type"] == "/problems/quota-exceeded"
    grant(session, world.acme, 10)
    session.flush()
    status, answer, _ = post(client, as_(world.researcher), "k2", body)
    assert status == 201 and answer["name"] == "second" and fake.calls["submit"] == 2


def test_slurms_refusal_is_not_kept_either(client: TestClient, world: World, as_: Headers,
                                           fake: FakeScheduler, session: Session) -> None:
    fake.submit_error = SchedulerRejected("Invalid account or account/partition combination")
    assert post(client, as_(world.researcher), "k3", job_body(world.project))[0] == 422
    fake.submit_error = None
    assert post(client, as_(world.researcher), "k3", job_body(world.project))[0] == 201
    states = sorted(j.state.value for j in session.scalars(select(Job)))
    assert states == ["pending", "submit_failed"] and len(fake.jobs) == 1


def test_an_answer_in_doubt_is_kept_and_a_retry_answers_with_that_job_never_a_second_sbatch(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler, session: Session,
        database: Database, settings: Settings) -> None:
    fake.lost_answer = SchedulerTimeout("sbatch did not answer in 60 s")
    status, first, _ = post(client, as_(world.researcher), "k4", job_body(world.project))
    assert status == 202 and first["state"] == "unknown"
    fake.lost_answer = None
    # the tracker finds it by its marker; the retry still answers with that one job
    cycle(database, fake, settings, clock=lambda: utcnow() + timedelta(minutes=1))
    status, again, _ = post(client, as_(world.researcher), "k4", job_body(world.project))
    assert (status, again["id"]) == (202, first["id"])
    assert fake.calls["submit"] == 1 and len(fake.jobs) == 1 and jobs_in(session) == 1


def test_a_dead_requests_key_whose_job_failed_to_submit_is_taken_over(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    fake.down = True
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 503
    failed = session.scalars(select(Job)).one()
    assert failed.state == JobState.submit_failed
    body = job_body(world.project)
    long_ago = utcnow() - timedelta(hours=1)
    session.add(IdempotencyRecord(  # a request that died after its submission failed
        user_id=world.researcher.id, key="k5", created_at=long_ago, job_id=failed.id,
        expires_at=long_ago + timedelta(days=1), fingerprint=idempotency.fingerprint(
            "POST", "/api/v1/jobs", JobCreate.model_validate(body).model_dump(mode="json"))))
    session.flush()
    fake.down = False
    status, answer, _ = post(client, as_(world.researcher), "k5", body)
    assert status == 201 and answer["id"] != failed.public_id and len(fake.jobs) == 1


def test_a_503_kept_by_an_earlier_version_is_not_replayed(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    body = job_body(world.project)
    now = utcnow()
    session.add(IdempotencyRecord(
        user_id=world.researcher.id, key="k6", created_at=now, expires_at=now + timedelta(1),
        state=IdempotencyState.done, response_status=503,
        response_body={"type": "/problems/cluster-unavailable", "retry_after": 30},
        fingerprint=idempotency.fingerprint(
            "POST", "/api/v1/jobs", JobCreate.model_validate(body).model_dump(mode="json"))))
    session.flush()
    status, answer, _ = post(client, as_(world.researcher), "k6", body)
    assert status == 201 and answer["scheduler_id"] == fake.only().id
    (record,) = keys_in(session)
    assert (record.state, record.response_status) == (IdempotencyState.done, 201)


def test_two_retries_racing_on_a_freed_key_make_one_sbatch(
        committed: tuple[World, TestClient], fresh_database: Database, fake: FakeScheduler,
        as_: Headers) -> None:
    world, client = committed
    body = job_body(world.project)
    fake.down = True
    assert post(client, as_(world.researcher), "race", body)[0] == 503
    fake.down = False
    inside, go_on = threading.Event(), threading.Event()
    submit = fake.submit

    async def held_submit(identity: object, spec: JobSpec) -> object:
        inside.set()
        await anyio.to_thread.run_sync(go_on.wait)  # the loop serves the racing request
        return await submit(identity, spec)  # type: ignore[arg-type]
    fake.submit = held_submit  # type: ignore[assignment, method-assign]
    answers: list[tuple[int, dict[str, object], dict[str, str]]] = []
    first = threading.Thread(target=lambda: answers.append(
        post(client, as_(world.researcher), "race", body)))
    first.start()
    assert inside.wait(10)
    second = post(client, as_(world.researcher), "race", body)
    go_on.set()
    first.join(10)
    assert second[0] == 409 and second[1]["type"] == "/problems/idempotency-in-flight"
    assert answers[0][0] == 201
    third = post(client, as_(world.researcher), "race", body)
    assert third[:2] == answers[0][:2]
    assert len(fake.jobs) == 1
    with fresh_database.transaction(write=False) as session:
        assert [j.state for j in session.scalars(select(Job).order_by(Job.id))] == [
            JobState.submit_failed, JobState.pending]


# --- 2. a cluster known to be down is said so at once ------------------------------------

def test_once_the_cluster_is_found_unreachable_submissions_fail_within_a_second(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    def slow_refusal(spec: JobSpec) -> None:
        time.sleep(1.0)  # sbatch waiting for the controller (MessageTimeout), shortened
    fake.on_submit = slow_refusal
    fake.down = True
    started = time.monotonic()
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 503
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    status, problem, headers = post(client, as_(world.researcher), None,
                                    job_body(world.project))
    assert time.monotonic() - started < 0.5
    assert status == 503 and headers["retry-after"] == "30"
    assert "nothing was submitted and nothing held" in str(problem["detail"])
    assert fake.calls["submit"] == 1 and jobs_in(session) == 1  # no row for the fast refusal
    fake.down = False  # back: the probe finds it, the submission goes on
    fake.on_submit = None
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 201


def test_a_probe_that_does_not_answer_refuses_after_its_timeout(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        settings: Settings) -> None:
    fake.down = True
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 503

    async def hanging_probe() -> object:
        await anyio.sleep(30)  # sshd gone: no answer at all
        raise AssertionError
    fake.health = hanging_probe  # type: ignore[assignment, method-assign]
    started = time.monotonic()
    status, problem, _ = post(client, as_(world.researcher), None, job_body(world.project))
    elapsed = time.monotonic() - started
    assert status == 503 and "no answer to scontrol ping within 1 s" in str(problem["detail"])
    assert settings.jobs.down_probe_seconds <= elapsed < settings.jobs.down_probe_seconds + 0.5
    assert fake.calls["submit"] == 1


def test_a_failed_tracker_cycle_marks_the_cluster_down_and_a_good_one_clears_it(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings) -> None:
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 201
    fake.down = True
    with pytest.raises(SchedulerUnavailable):
        cycle(database, fake, settings)
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 503
    assert fake.calls["submit"] == 1  # refused without trying
    fake.down = False
    cycle(database, fake, settings)
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 201


def test_a_lost_answer_does_not_mark_the_cluster_down(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    fake.lost_answer = SchedulerUnavailable("connection reset", maybe_executed=True)
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 202
    fake.lost_answer = None
    assert post(client, as_(world.researcher), None, job_body(world.project))[0] == 201
