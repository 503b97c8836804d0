"""Another member's job and a job that does not exist answer alike, on every job route: the
same status and body (but for the id itself), by the same steps, so that ids cannot be told
apart by the answer or by its time."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from jobs_helpers import World, submit
from sqlalchemy import event

from consortium.models import User
from gateway.db import Database

Headers = Callable[[User], dict[str, str]]
MISSING = "ffffffffffff"
ROUTES = [
    ("GET", "/api/v1/jobs/{id}"),
    ("POST", "/api/v1/jobs/{id}/cancel"),
    ("GET", "/api/v1/jobs/{id}/output"),
    ("GET", "/api/v1/jobs/{id}/output?follow=true"),
    ("GET", "/api/v1/jobs/{id}/events"),
    ("GET", "/api/v1/jobs/{id}/files/result.txt"),
]


@pytest.fixture
def others_job(committed: tuple[World, TestClient], as_: Headers) -> str:
    world, client = committed
    answer = submit(client, as_(world.stranger), world.other_project)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _seen(answer: httpx.Response, job_id: str) -> tuple[int, str, str]:
    """Status, content type and body of an answer, the job id and request id taken out."""
    body = {k: v for k, v in answer.json().items() if k != "request_id"}
    return (answer.status_code, answer.headers["content-type"],
            json.dumps(body, sort_keys=True).replace(job_id, "ID"))


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_another_members_job_answers_exactly_as_a_missing_one(
        committed: tuple[World, TestClient], as_: Headers, others_job: str,
        method: str, path: str) -> None:
    world, client = committed
    for caller in (world.researcher, world.manager, world.viewer):
        seen = {_seen(client.request(method, path.format(id=job_id), headers=as_(caller)),
                      job_id) for job_id in (others_job, MISSING)}
        assert len(seen) == 1, seen
        [(status, content_type, _)] = seen
        assert (status, content_type) == (404, "application/problem+json")
    # the positive control: its owner reads it
    assert client.get(f"/api/v1/jobs/{others_job}", headers=as_(world.stranger)).status_code \
        == 200


@pytest.fixture
def statements(fresh_database: Database) -> Iterator[list[str]]:
    """The SQL the app sends through its engine, in order."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        sent.append(sql)

    event.listen(fresh_database.engine, "before_cursor_execute", record)
    yield sent
    event.remove(fresh_database.engine, "before_cursor_execute", record)


def _steps(client: TestClient, headers: dict[str, str], job_id: str,
           statements: list[str]) -> list[str]:
    statements.clear()
    assert client.get(f"/api/v1/jobs/{job_id}", headers=headers).status_code == 404
    return list(statements)


def test_the_read_path_takes_the_same_steps_for_both(
        committed: tuple[World, TestClient], as_: Headers, others_job: str,
        statements: list[str]) -> None:
    world, client = committed
    researcher, manager = as_(world.researcher), as_(world.manager)
    # callers the read path does not know yet: each answer is built, then refused
    unknown = _steps(client, researcher, others_job, statements)
    assert unknown == _steps(client, manager, MISSING, statements)
    # the same callers, now kept: refused from the caches, then by the route alone
    kept = _steps(client, researcher, MISSING, statements)
    assert kept == _steps(client, manager, others_job, statements)
    assert kept == _steps(client, researcher, others_job, statements)
    assert kept and len(kept) < len(unknown)
