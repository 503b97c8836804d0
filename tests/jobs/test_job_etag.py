"""GET /api/v1/jobs/{id} carries the job's revision as a strong ETag, and If-None-Match answers
304 (the ETag, no body) while the job is unchanged: for the tag itself, its weak form, a list
holding it, and `*`. A change of the job or a new event gives a new tag and a full answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from jobs_helpers import World, submit
from sqlalchemy import select

from consortium.base import utcnow
from consortium.models import User
from gateway.db import Database
from gateway.jobs.models import Job, JobEvent, JobState

Headers = Callable[[User], dict[str, str]]


@pytest.fixture
def job(committed: tuple[World, TestClient], as_: Headers) -> str:
    world, client = committed
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _get(client: TestClient, job: str, headers: dict[str, str], if_none_match: str | None = None,
         ) -> tuple[int, str, bytes]:
    sent = dict(headers) if if_none_match is None else {**headers, "If-None-Match": if_none_match}
    answer = client.get(f"/api/v1/jobs/{job}", headers=sent)
    return answer.status_code, answer.headers.get("etag", ""), answer.content


def _revision(database: Database, job: str) -> int:
    with database.transaction() as session:
        return session.scalars(select(Job.revision).where(Job.public_id == job)).one()


def test_the_answer_carries_the_jobs_revision_as_a_strong_etag(
    committed: tuple[World, TestClient], fresh_database: Database, as_: Headers, job: str,
) -> None:
    world, client = committed
    status, etag, body = _get(client, job, as_(world.researcher))
    assert status == 200 and body
    assert etag == f'"{_revision(fresh_database, job)}"'
    assert _get(client, job, as_(world.researcher))[1] == etag  # the same from the cache


@pytest.mark.parametrize("form", ["{tag}", "W/{tag}", '"x", {tag} , W/"y"', "*"])
def test_if_none_match_naming_the_current_tag_answers_304_without_a_body(
    committed: tuple[World, TestClient], as_: Headers, job: str, form: str,
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    _, etag, _ = _get(client, job, headers)
    for _ in range(2):  # built, then from the cache
        status, tag, body = _get(client, job, headers, form.format(tag=etag))
        assert (status, tag, body) == (304, etag, b"")


@pytest.mark.parametrize("form", ['"0"', 'W/"999999"', "{bare}", "", "garbage, ,"])
def test_if_none_match_naming_another_tag_answers_the_job(
    committed: tuple[World, TestClient], as_: Headers, job: str, form: str,
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    _, etag, _ = _get(client, job, headers)
    status, tag, body = _get(client, job, headers, form.format(bare=etag.strip('"')))
    assert (status, tag) == (200, etag)
    assert b'"id"' in body


def test_a_change_or_an_event_gives_a_new_tag_and_the_whole_answer(
    committed: tuple[World, TestClient], fresh_database: Database, as_: Headers, job: str,
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    _, first, _ = _get(client, job, headers)

    with fresh_database.transaction() as session:  # as the tracker would
        row = session.scalars(select(Job).where(Job.public_id == job)).one()
        row.pending_reason = "Priority"
    status, second, body = _get(client, job, headers, first)
    assert status == 200 and second != first and b"Priority" in body

    with fresh_database.transaction() as session:
        job_id = session.scalars(select(Job.id).where(Job.public_id == job)).one()
        session.add(JobEvent(job_id=job_id, at=utcnow(), from_state=JobState.pending,
                             to_state=JobState.pending, detail="requeued"))
    status, third, body = _get(client, job, headers, second)
    assert status == 200 and third not in (first, second) and b"requeued" in body
    assert _get(client, job, headers, third)[0] == 304


def test_a_refusal_is_a_refusal_whatever_the_tag(
    committed: tuple[World, TestClient], as_: Headers, job: str,
) -> None:
    world, client = committed
    _, etag, _ = _get(client, job, as_(world.researcher))
    for if_none_match in (etag, "*"):
        status, tag, _ = _get(client, job, as_(world.stranger), if_none_match)
        assert (status, tag) == (404, "")
        status, _, _ = _get(client, job, {}, if_none_match)
        assert status == 401
