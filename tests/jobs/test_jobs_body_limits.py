"""The job routes under the body guard (gateway.api.middleware.BodyGuard): a submission still
goes through, from a token the gateway has never seen as from one it keeps; an oversized one
reaches neither the database nor the cluster; an upload has a cap of its own, counted as the
file streams in, and nothing of an upload over it is stored."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import CLUSTER, World, job_body
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.models import User
from gateway.api.app import create_app
from gateway.api.errors import PROBLEM_JSON
from gateway.db import Database
from gateway.jobs.models import Job
from gateway.settings import Settings

Headers = Callable[[User], dict[str, str]]
JOBS = "/api/v1/jobs"


def _chunks(data: bytes, size: int = 256) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked)."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_submission_goes_through_the_guard_with_a_new_token_then_a_kept_one(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    headers = as_(world.researcher)  # a token the app has never seen: the guard checks it
    for name in ("first", "second"):  # the second: kept from the first
        answer = client.post(JOBS, headers=headers, json=job_body(world.project, name=name))
        assert answer.status_code == 201, answer.text
    assert fake.calls["submit"] == 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_submission_is_refused_413_and_reaches_neither_database_nor_cluster(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler, settings: Settings,
        session: Session, chunked: bool) -> None:
    script = "#!/bin/bash\n" + "#" * settings.max_body_bytes
    data = job_body(world.project, script=script)
    headers = {**as_(world.researcher), "Content-Type": "application/json"}
    encoded = json.dumps(data).encode()
    answer = client.post(JOBS, headers=headers,
                         content=_chunks(encoded, 1 << 20) if chunked else encoded)
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert f"{settings.max_body_bytes} bytes" in answer.json()["detail"]
    assert fake.calls["submit"] == 0
    assert session.scalar(select(func.count()).select_from(Job)) == 0


@pytest.fixture
def capped(settings: Settings, database: Database, fake: FakeScheduler) -> Iterator[TestClient]:
    """Files up to 1000 bytes, other bodies up to 100: an upload is capped by its own limit."""
    small = settings.model_copy(update={
        "max_body_bytes": 100,
        "jobs": settings.jobs.model_copy(update={"file_max_bytes": 1000})})
    with TestClient(create_app(small, database=database, schedulers={CLUSTER: fake})) as client:
        yield client


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_is_capped_by_its_own_limit_and_nothing_over_it_is_stored(
        capped: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        chunked: bool) -> None:
    def upload(path: str, data: bytes) -> int:
        answer = capped.put(f"/api/v1/members/acme/files/{path}", headers=as_(world.researcher),
                            content=_chunks(data) if chunked else data)
        assert answer.headers["content-type"] in (PROBLEM_JSON, "application/json")
        return answer.status_code

    assert upload("ok.bin", b"x" * 1000) == 201  # over max_body_bytes, within file_max_bytes
    assert upload("big.bin", b"x" * 1001) == 413
    assert [path for _, path in fake.files] == ["ok.bin"]
    assert fake.calls["put_file"] == 1
