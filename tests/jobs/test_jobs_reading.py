"""Reading jobs (from the database only), cancelling, output, server-sent events, files; and
no member ever reaches another member's job."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from factories import make_project
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import CLUSTER, World, cycle, job_body, submit
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.models import User
from gateway.api.app import create_app
from gateway.auth.principal import principal_for_user
from gateway.db import Database
from gateway.jobs.models import Job, JobState
from gateway.jobs.schemas import JobCreate
from gateway.jobs.service import JobService
from gateway.settings import Settings
from quotas.models import Hold, HoldState
from schedulers.models import JobState as ClusterState

Headers = Callable[[User], dict[str, str]]


def new_job(client: TestClient, world: World, as_: Headers, *, project: Any = None,
            **changes: Any) -> str:
    answer = submit(client, as_(world.researcher), project or world.project, **changes)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def write_output(fake: FakeScheduler, data: bytes, stream: str = "stdout") -> None:
    job = fake.only()
    path = job.spec.stdout if stream == "stdout" else job.spec.stderr
    fake.files[(job.identity.work_root, path)] = data


def sse_events(lines: list[str]) -> list[dict[str, Any]]:
    """The events of a text/event-stream body: their id, event and data (JSON)."""
    events, current = [], {}
    for line in lines:
        if not line:
            if current:
                events.append(current)
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    if current:
        events.append(current)
    return events


# --- listing -------------------------------------------------------------------------------

def test_the_list_filters_and_pages_stay_stable_when_jobs_arrive(
        *, client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler, database: Database, settings: Settings) -> None:
    second = make_project(session, world.acme, "nlp")
    mine = [new_job(client, world, as_) for _ in range(3)]
    mine.append(new_job(client, world, as_, project=second))
    by_manager = submit(client, as_(world.manager), world.project).json()["id"]
    submit(client, as_(world.stranger), world.other_project)
    fake.end(next(iter(fake.jobs)), ClusterState.completed, seconds=5)  # the first one
    cycle(database, fake, settings)
    headers = as_(world.researcher)

    def ids(query: str) -> list[str]:
        answer = client.get(f"/api/v1/jobs?{query}", headers=headers)
        assert answer.status_code == 200, answer.text
        return [j["id"] for j in answer.json()["items"]]

    everything = ids("limit=200")
    assert everything == [by_manager, *reversed(mine)]  # acme's only, newest first
    assert ids(f"project={second.id}") == [mine[3]]
    assert ids(f"user={world.manager.id}") == [by_manager]
    assert ids("state=completed") == [mine[0]]
    assert ids("state=completed&state=pending") == everything
    assert ids(f"cluster={CLUSTER}") == everything and ids("cluster=other") == []
    assert ids("since=2999-01-01T00:00:00Z") == []

    first = client.get("/api/v1/jobs?limit=2", headers=headers).json()
    assert [j["id"] for j in first["items"]] == everything[:2]
    newer = new_job(client, world, as_)  # arrives between two pages
    rest: list[str] = []
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(f"/api/v1/jobs?limit=2&cursor={cursor}", headers=headers).json()
        rest += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
    assert rest == everything[2:] and newer not in rest
    admin = client.get("/api/v1/jobs?limit=200", headers=as_(world.admin)).json()["items"]
    assert len(admin) == 7


def test_a_viewer_lists_nothing_and_cannot_read_a_job(client: TestClient, world: World,
                                                      as_: Headers) -> None:
    public_id = new_job(client, world, as_)
    assert client.get("/api/v1/jobs", headers=as_(world.viewer)).json()["items"] == []
    assert client.get(f"/api/v1/jobs/{public_id}", headers=as_(world.viewer)).status_code == 403


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/jobs/{id}"),
    ("POST", "/api/v1/jobs/{id}/cancel"),
    ("GET", "/api/v1/jobs/{id}/output"),
    ("GET", "/api/v1/jobs/{id}/output?follow=true"),
    ("GET", "/api/v1/jobs/{id}/events"),
    ("GET", "/api/v1/jobs/{id}/files/checkpoint.pt"),
])
def test_another_members_job_is_404_on_every_route(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        method: str, path: str) -> None:
    public_id = new_job(client, world, as_)
    answer = client.request(method, path.format(id=public_id), headers=as_(world.stranger))
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert fake.calls["cancel"] == fake.calls["read_output"] == fake.calls["get_file"] == 0
    listed = client.get("/api/v1/jobs", headers=as_(world.stranger)).json()["items"]
    assert public_id not in [j["id"] for j in listed]


def test_an_unknown_job_is_404_and_a_malformed_id_422(client: TestClient, world: World,
                                                      as_: Headers) -> None:
    headers = as_(world.researcher)
    assert client.get("/api/v1/jobs/0123456789ab", headers=headers).status_code == 404
    assert client.get("/api/v1/jobs/not-an-id", headers=headers).status_code == 422


# --- cancelling ----------------------------------------------------------------------------

def test_cancel_is_idempotent_and_the_tracker_records_the_end(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, settings: Settings, session: Session) -> None:
    public_id = new_job(client, world, as_)
    url = f"/api/v1/jobs/{public_id}/cancel"
    headers = as_(world.researcher)
    first = client.post(url, headers=headers)
    assert first.status_code == 202 and first.json()["cancel_requested"] is True
    assert client.post(url, headers=headers).status_code == 202
    assert fake.calls["cancel"] == 1 and fake.cancelled == [fake.only().id]
    fake.end(fake.only().id, ClusterState.cancelled, seconds=0)
    cycle(database, fake, settings)
    ended = client.post(url, headers=headers)
    assert ended.status_code == 200 and ended.json()["state"] == "cancelled"
    assert ended.json()["charge_msu"] == 0 and fake.calls["cancel"] == 1
    assert client.post(url, headers=as_(world.viewer)).status_code == 403


def test_a_job_not_yet_submitted_is_cancelled_here_and_its_hold_released(
        *, client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        database: Database, session: Session) -> None:
    service: JobService = client.app.state.jobs  # type: ignore[attr-defined]
    principal = principal_for_user(session, world.researcher)
    with database.transaction() as tx:
        accepted = service._accept(tx, principal, JobCreate.model_validate(
            job_body(world.project)), RequestContext(), None)
    answer = client.post(f"/api/v1/jobs/{accepted.public_id}/cancel",
                         headers=as_(world.researcher))
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    session.expire_all()
    hold = session.scalars(select(Hold).where(Hold.job_id == accepted.public_id)).one()
    assert hold.state == HoldState.released
    assert fake.calls["submit"] == fake.calls["cancel"] == 0


# --- output --------------------------------------------------------------------------------

def test_output_is_read_by_offset_and_never_cuts_a_character(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    public_id = new_job(client, world, as_)
    headers = as_(world.researcher)
    empty = client.get(f"/api/v1/jobs/{public_id}/output", headers=headers).json()
    assert empty["data"] == "" and empty["size"] == 0  # not started writing
    write_output(fake, "épée\n".encode())
    write_output(fake, b"Traceback: boom\n", "stderr")
    # 4 bytes end inside the second "é": it is left for the next read
    part = client.get(f"/api/v1/jobs/{public_id}/output?limit=4", headers=headers).json()
    assert (part["data"], part["next_offset"], part["size"]) == ("ép", 3, 7)
    rest = client.get(f"/api/v1/jobs/{public_id}/output?offset=3",
                      headers=headers).json()
    assert rest["data"] == "ée\n" and rest["complete"] is False
    err = client.get(f"/api/v1/jobs/{public_id}/output?stream=stderr", headers=headers).json()
    assert err["data"] == "Traceback: boom\n"
    fake.down = True
    down = client.get(f"/api/v1/jobs/{public_id}/output", headers=headers)
    assert down.status_code == 503 and "retry-after" in down.headers


def test_output_follows_as_server_sent_events_until_the_job_ends(
        committed: tuple[World, TestClient], fake: FakeScheduler, fresh_database: Database,
        settings: Settings, as_: Headers) -> None:
    world, client = committed
    public_id = new_job(client, world, as_)
    write_output(fake, b"epoch=1 loss=0.9\n")
    url = f"/api/v1/jobs/{public_id}/output"
    with client.stream("GET", url, headers={**as_(world.researcher),
                                            "Accept": "text/event-stream"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        seen = []
        for line in lines:
            seen.append(line)
            if line == "":
                break
        write_output(fake, b"epoch=1 loss=0.9\nepoch=2 loss=0.4\n")
        fake.end(fake.only().id, ClusterState.completed, seconds=10)
        cycle(fresh_database, fake, settings)
        seen += list(lines)
    events = sse_events(seen)
    text = "".join(e["data"]["data"] for e in events if e["event"] == "output")
    assert text == "epoch=1 loss=0.9\nepoch=2 loss=0.4\n"
    assert events[-1] == {"event": "end", "data": {"complete": True, "next_offset": 34}}


# --- state events --------------------------------------------------------------------------

def test_state_events_replay_then_follow_and_end_after_the_final_state(
        committed: tuple[World, TestClient], fake: FakeScheduler, fresh_database: Database,
        settings: Settings, as_: Headers) -> None:
    world, client = committed
    public_id = new_job(client, world, as_)
    url = f"/api/v1/jobs/{public_id}/events"
    headers = as_(world.researcher)
    with client.stream("GET", url, headers=headers) as stream:
        lines = stream.iter_lines()
        seen = []
        for line in lines:
            seen.append(line)
            if len(sse_events(seen)) == 3 and line == "":
                break
        fake.run(fake.only().id)
        cycle(fresh_database, fake, settings)
        fake.end(fake.only().id, ClusterState.completed, seconds=10)
        cycle(fresh_database, fake, settings)
        seen += list(lines)  # the server ends the stream after `completed`
    events = sse_events(seen)
    assert [e["data"]["to_state"] for e in events] == [
        "accepted", "submitting", "pending", "running", "completed"]
    assert all(e["event"] == "state" for e in events)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    resumed = client.get(url, headers={**headers, "Last-Event-ID": str(ids[2])})
    assert [e["data"]["to_state"] for e in sse_events(resumed.text.splitlines())] == [
        "running", "completed"]


def test_an_event_stream_is_bounded_in_time(
        *, client: TestClient, world: World, as_: Headers, settings: Settings,
        database: Database, fake: FakeScheduler) -> None:
    short = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"stream_max_seconds": 0.3})})
    app = create_app(short, database=database, schedulers={CLUSTER: fake})
    with TestClient(app) as quick:
        public_id = new_job(quick, world, as_)
        answer = quick.get(f"/api/v1/jobs/{public_id}/events", headers=as_(world.researcher))
    assert [e["data"]["to_state"] for e in sse_events(answer.text.splitlines())][-1] == "pending"


# --- files ---------------------------------------------------------------------------------

def test_files_go_into_the_members_work_directory_and_come_back(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> None:
    headers = as_(world.researcher)
    put = client.put("/api/v1/members/acme/files/data/train.csv", content=b"x,y\n1,2\n",
                     headers=headers)
    assert put.status_code == 201 and put.json() == {"path": "data/train.csv", "size": 8,
                                                     "cluster": CLUSTER}
    got = client.get("/api/v1/members/acme/files/data/train.csv", headers=headers)
    assert got.status_code == 200 and got.content == b"x,y\n1,2\n"
    assert client.get("/api/v1/members/acme/files/data/train.csv",
                      headers=as_(world.stranger)).status_code == 404
    assert client.put("/api/v1/members/acme/files/x", content=b"1",
                      headers=as_(world.viewer)).status_code == 403
    assert client.get("/api/v1/members/acme/files/missing.txt",
                      headers=headers).status_code == 404
    public_id = new_job(client, world, as_, workdir="runs/a")
    job = fake.jobs[max(fake.jobs)]
    fake.files[(job.identity.work_root, "runs/a/checkpoint.pt")] = b"\x00weights"
    checkpoint = client.get(f"/api/v1/jobs/{public_id}/files/checkpoint.pt", headers=headers)
    assert checkpoint.content == b"\x00weights"
    assert "checkpoint.pt" in checkpoint.headers["content-disposition"]


@pytest.mark.parametrize("path", ["a/%2E%2E/%2E%2E/etc/passwd", "a%20b", "%2Fetc%2Fpasswd"])
def test_a_path_outside_the_work_directory_is_refused(client: TestClient, world: World,
                                                      as_: Headers, path: str) -> None:
    answer = client.put(f"/api/v1/members/acme/files/{path}", content=b"1",
                        headers=as_(world.researcher))
    assert answer.status_code == 422


def test_files_are_size_capped(world: World, as_: Headers, settings: Settings,
                               database: Database, fake: FakeScheduler) -> None:
    small = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"file_max_bytes": 10})})
    with TestClient(create_app(small, database=database, schedulers={CLUSTER: fake})) as quick:
        answer = quick.put("/api/v1/members/acme/files/big.bin", content=b"x" * 11,
                           headers=as_(world.researcher))
    assert answer.status_code == 413 and fake.calls["put_file"] == 0


def test_a_job_detail_reads_the_database_only(
        client: TestClient, world: World, as_: Headers, fake: FakeScheduler,
        session: Session) -> None:
    public_id = new_job(client, world, as_)
    fake.down = True
    fake.calls.clear()
    detail = client.get(f"/api/v1/jobs/{public_id}", headers=as_(world.researcher))
    assert detail.status_code == 200 and sum(fake.calls.values()) == 0
    body = detail.json()
    assert body["script"] == "#!/bin/bash\necho hello\n" and len(body["events"]) == 3
    job = session.scalars(select(Job).where(Job.public_id == public_id)).one()
    assert job.state == JobState.pending
