"""Idempotency-Key on POST /api/v1/jobs (IETF httpapi-idempotency-key-header semantics)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import World, cycle, job_body, transactions_of
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import User
from gateway.db import Database
from gateway.jobs import idempotency
from gateway.jobs.models import IdempotencyRecord, IdempotencyState, Job
from gateway.jobs.schemas import JobCreate
from gateway.settings import Settings
from schedulers.models import JobState as ClusterState

Headers = Callable[[User], dict[str, str]]


def post(client: TestClient, headers: dict[str, str], key: str, body: dict[str, object]
         ) -> tuple[int, dict[str, object]]:
    answer = client.post("/api/v1/jobs", headers={**headers, "Idempotency-Key": key}, json=body)
    return answer.status_code, answer.json()


def jobs_in(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_retry_with_the_same_key_and_body_gets_the_same_response_whatever_happened(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    body = job_body(world.project)
    first = post(client, as_(world.researcher), "retry-1", body)
    assert first[0] == 201
    job_id = fake.only().id
    fake.run(job_id)
    fake.end(job_id, ClusterState.completed)
    cycle(database, fake, settings)
    # the body in another key order is the same request
    again = post(client, as_(world.researcher), "retry-1", dict(reversed(body.items())))
    assert again == first  # the first response, though the job has ended since
    assert fake.calls["submit"] == 1 and jobs_in(session) == 1


def test_the_answer_is_stored_under_the_key_with_the_slurm_id_it_shows(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    """No transaction of its own for the key's response: a crash after the id is stored leaves
    no key in flight."""
    with transactions_of(client, fake) as log:
        status, answer = post(client, as_(world.researcher), "once", job_body(world.project))
    assert status == 201 and answer["scheduler_id"] == fake.only().id
    assert log == ["write", "write", "sbatch", "write"]  # claim, accept, id + answer
    record = session.scalars(select(IdempotencyRecord)
                             .where(IdempotencyRecord.key == "once")).one()
    assert record.state == IdempotencyState.done
    assert (record.response_status, record.response_body) == (201, answer)


def test_the_same_key_with_another_body_is_422(client: TestClient, world: World,
                                               as_: Headers, fake: FakeScheduler) -> None:
    assert post(client, as_(world.researcher), "k", job_body(world.project))[0] == 201
    status, problem = post(client, as_(world.researcher), "k",
                           job_body(world.project, name="other"))
    assert status == 422 and problem["type"] == "/problems/idempotency-key-reused"
    assert fake.calls["submit"] == 1


def test_the_same_key_while_the_first_request_runs_is_409(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    body = job_body(world.project)
    parsed = JobCreate.model_validate(body).model_dump(mode="json")
    now = utcnow()
    session.add(IdempotencyRecord(
        user_id=world.researcher.id, key="busy", created_at=now, expires_at=now + timedelta(1),
        fingerprint=idempotency.fingerprint("POST", "/api/v1/jobs", parsed)))
    session.flush()
    answer = client.post("/api/v1/jobs", json=body,
                         headers={**as_(world.researcher), "Idempotency-Key": "busy"})
    assert answer.status_code == 409
    assert answer.json()["type"] == "/problems/idempotency-in-flight"
    assert answer.headers["retry-after"] == "2"
    assert fake.calls["submit"] == 0


def test_a_key_whose_request_died_after_creating_the_job_answers_with_that_job(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    first = client.post("/api/v1/jobs", json=job_body(world.project),
                        headers=as_(world.researcher))
    job = session.scalars(select(Job).where(Job.public_id == first.json()["id"])).one()
    body = job_body(world.project)
    parsed = JobCreate.model_validate(body).model_dump(mode="json")
    long_ago = utcnow() - timedelta(hours=1)
    session.add(IdempotencyRecord(
        user_id=world.researcher.id, key="orphan", created_at=long_ago, job_id=job.id,
        expires_at=long_ago + timedelta(days=1),
        fingerprint=idempotency.fingerprint("POST", "/api/v1/jobs", parsed)))
    session.flush()
    status, answer = post(client, as_(world.researcher), "orphan", body)
    assert status == 202 and answer["id"] == job.public_id
    assert fake.calls["submit"] == 1  # the job of the dead request, not a new one


def test_keys_belong_to_their_user(client: TestClient, world: World, as_: Headers,
                                   fake: FakeScheduler, session: Session) -> None:
    assert post(client, as_(world.researcher), "mine", job_body(world.project))[0] == 201
    assert post(client, as_(world.manager), "mine", job_body(world.project))[0] == 201
    assert fake.calls["submit"] == 2
    done = session.scalars(select(IdempotencyRecord)).all()
    assert {r.state for r in done} == {IdempotencyState.done}


def test_an_expired_key_can_be_used_again(client: TestClient, world: World, as_: Headers,
                                          fake: FakeScheduler, session: Session) -> None:
    assert post(client, as_(world.researcher), "old", job_body(world.project))[0] == 201
    record = session.scalars(select(IdempotencyRecord)).one()
    record.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    assert post(client, as_(world.researcher), "old", job_body(world.project))[0] == 201
    assert fake.calls["submit"] == 2


def test_a_malformed_key_is_422(client: TestClient, world: World, as_: Headers) -> None:
    answer = client.post("/api/v1/jobs", json=job_body(world.project),
                         headers={**as_(world.researcher), "Idempotency-Key": "has space"})
    assert answer.status_code == 422
