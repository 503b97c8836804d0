"""GET /api/v1/jobs with its items kept by job under the job's revision (gateway.jobs.reads,
JobReads.page): each page the same bytes as the items built from the rows, every change of a job
(its row, an event, an array's task) seen by the next page, and no member's jobs in another's."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import World, cycle, submit
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import User
from gateway.api.schemas import Page
from gateway.auth.principal import principal_for_user
from gateway.db import Database
from gateway.jobs import repository
from gateway.jobs.models import Job, JobEvent, JobState, JobTask
from gateway.jobs.schemas import JobOut
from gateway.jobs.transitions import transition
from gateway.jobs.views import job_out
from gateway.settings import Settings
from schedulers.models import JobState as ClusterState

Headers = Callable[[User], dict[str, str]]


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The ids of the jobs whose items a page built from their rows (not kept)."""
    ids: list[int] = []
    listed_jobs = repository.listed_jobs

    def counted(session: Session, job_ids: Sequence[int]) -> list[Job]:
        ids.extend(job_ids)
        return listed_jobs(session, job_ids)

    monkeypatch.setattr(repository, "listed_jobs", counted)
    yield ids


def uncached(session: Session, user: User, query: dict[str, Any]) -> bytes:
    """The page as the route built it before its items were kept: every job from its row,
    through pydantic."""
    session.expire_all()
    limit = int(query.get("limit", 50))
    cursor = query.get("cursor")
    found = repository.list_jobs(session, principal_for_user(session, user),
                                 repository.JobFilters(states=[JobState(query["state"])]
                                                       if "state" in query else ()),
                                 before_id=int(cursor) if cursor else None, limit=limit + 1)
    items = found[:limit]
    counts = repository.task_counts(session, items)
    return Page[JobOut](items=[job_out(j, counts.get(j.id, {})) for j in items],
                        next_cursor=str(items[-1].id) if len(found) > limit else None
                        ).model_dump_json().encode()


def listed(client: TestClient, session: Session, as_: Headers, user: User,
           **query: Any) -> dict[str, Any]:
    """The page the API answers, checked against the uncached build byte for byte."""
    answer = client.get("/api/v1/jobs", params=query, headers=as_(user))
    assert answer.status_code == 200, answer.text
    assert answer.content == uncached(session, user, query)
    return dict(answer.json())


def new_job(client: TestClient, as_: Headers, user: User, project: Any,
            **changes: Any) -> str:
    answer = submit(client, as_(user), project, **changes)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def job_of(session: Session, public_id: str) -> Job:
    session.expire_all()
    return session.scalars(select(Job).where(Job.public_id == public_id)).one()


def states(page: dict[str, Any]) -> dict[str, str]:
    return {item["id"]: item["state"] for item in page["items"]}


def test_a_page_is_the_uncached_json_byte_for_byte_then_kept(
        *, client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler, database: Database, settings: Settings, built: list[int]) -> None:
    first = new_job(client, as_, world.researcher, world.project)
    new_job(client, as_, world.researcher, world.project, environment={"SEED": "7"},
            name="with-env")
    new_job(client, as_, world.researcher, world.project,
            resources={"partition": "cpu", "mem_mb": 1024, "time_limit_minutes": 60,
                       "array": "0-2"})
    fake.end(job_of(session, first).scheduler_id or "", ClusterState.completed, seconds=30)
    cycle(database, fake, settings)  # charged, with its energy and carbon

    page = listed(client, session, as_, world.researcher)
    assert len(page["items"]) == 3 and page["next_cursor"] is None
    assert states(page)[first] == "completed"
    assert len(built) == 3
    assert listed(client, session, as_, world.researcher) == page
    assert listed(client, session, as_, world.researcher, state="completed")["items"] == [
        item for item in page["items"] if item["id"] == first]
    assert len(built) == 3  # both pages from the kept items


def test_a_changed_job_shows_its_change_on_the_next_page(
        *, client: TestClient, world: World, as_: Headers, session: Session,
        built: list[int]) -> None:
    jobs = [new_job(client, as_, world.researcher, world.project) for _ in range(3)]
    assert set(states(listed(client, session, as_, world.researcher)).values()) == {"pending"}

    changed = job_of(session, jobs[1])
    transition(session, changed, JobState.running)
    session.flush()
    built.clear()
    assert states(listed(client, session, as_, world.researcher))[jobs[1]] == "running"
    assert built == [changed.id]  # only the changed job is built again

    # as the tracker writes a reason, behind the API's back; then an event alone
    session.execute(update(Job).where(Job.id == changed.id).values(pending_reason="Priority"))
    assert listed(client, session, as_, world.researcher)["items"][1]["pending_reason"] == (
        "Priority")
    session.add(JobEvent(job_id=changed.id, at=utcnow(), from_state=JobState.running,
                         to_state=JobState.running, detail="requeued"))
    session.flush()
    built.clear()
    listed(client, session, as_, world.researcher)
    assert built == [changed.id]


def test_another_members_jobs_never_appear_even_once_kept(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    mine = [new_job(client, as_, world.researcher, world.project) for _ in range(2)]
    theirs = new_job(client, as_, world.stranger, world.other_project)
    everything = [item["id"] for item in listed(client, session, as_, world.admin)["items"]]
    assert sorted(everything) == sorted([*mine, theirs])  # all kept now

    assert set(states(listed(client, session, as_, world.researcher))) == set(mine)
    assert set(states(listed(client, session, as_, world.stranger))) == {theirs}
    assert listed(client, session, as_, world.viewer) == {"items": [], "next_cursor": None}


def test_cursor_paging_is_unchanged_and_not_shifted_by_new_jobs(
        *, client: TestClient, world: World, as_: Headers, session: Session) -> None:
    jobs = [new_job(client, as_, world.researcher, world.project) for _ in range(5)]
    listed(client, session, as_, world.researcher, limit=3)  # some kept, some not
    page = listed(client, session, as_, world.researcher, limit=2)
    seen = [item["id"] for item in page["items"]]
    newer = new_job(client, as_, world.researcher, world.project)  # between two pages
    while page["next_cursor"] is not None:
        page = listed(client, session, as_, world.researcher, limit=2,
                      cursor=page["next_cursor"])
        seen += [item["id"] for item in page["items"]]
    assert seen == jobs[::-1] and newer not in seen


def test_an_arrays_task_counts_are_current_on_every_page(
        *, client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler, database: Database, settings: Settings) -> None:
    public_id = new_job(client, as_, world.researcher, world.project,
                        resources={"partition": "cpu", "mem_mb": 1024,
                                   "time_limit_minutes": 60, "array": "0-2"})

    def tasks() -> dict[str, int]:
        (item,) = listed(client, session, as_, world.researcher)["items"]
        return dict(item["tasks"])

    assert tasks() == {"pending": 3}  # not seen by the tracker yet
    array_id = job_of(session, public_id).scheduler_id
    fake.run(f"{array_id}_0")
    cycle(database, fake, settings)
    assert tasks() == {"pending": 2, "running": 1}
    fake.run(f"{array_id}_1")  # the job stays running: only a task's row changes
    cycle(database, fake, settings)
    assert tasks() == {"pending": 1, "running": 2}
    session.execute(update(JobTask).where(JobTask.scheduler_id == f"{array_id}_2")
                    .values(state=JobState.failed))
    assert tasks() == {"failed": 1, "running": 2}
