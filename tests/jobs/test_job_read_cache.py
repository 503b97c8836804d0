"""GET /api/v1/jobs/{id} answered from the read path's caches (gateway.jobs.reads): each
answer checked against the database's job revision and auth epoch, so every change to the job or
to the caller's rights is seen by the next request; the triggers keeping both on each database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from jobs_helpers import World, submit
from sqlalchemy import delete, select, text, update

from consortium.authz import Principal
from consortium.base import utcnow
from consortium.models import AuthEpoch, Membership, Role, User
from gateway.auth import authenticator
from gateway.auth.principal import read_principal
from gateway.db import Database
from gateway.jobs.models import Job, JobEvent, JobState
from gateway.jobs.reads import JobAnswer, JobReads
from gateway.jobs.transitions import transition
from gateway.loop_reads import APPLICATION_NAME, LoopReadFailed, LoopReads

Headers = Callable[[User], dict[str, str]]


@pytest.fixture
def builds(committed: tuple[World, TestClient], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The public ids of the answers the read path built (rather than took from its caches)."""
    reads: JobReads = committed[1].app.state.job_reads  # type: ignore[attr-defined]
    built: list[str] = []
    fresh = reads._fresh

    def counted(principal: Principal, public_id: str) -> JobAnswer:
        built.append(public_id)
        return fresh(principal, public_id)

    monkeypatch.setattr(reads, "_fresh", counted)
    return built


@pytest.fixture
def job(committed: tuple[World, TestClient], as_: Headers) -> str:
    world, client = committed
    answer = submit(client, as_(world.researcher), world.project)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _read(client: TestClient, job: str, headers: dict[str, str]) -> Any:
    answer = client.get(f"/api/v1/jobs/{job}", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_job_is_built_once_then_rebuilt_after_each_change_of_its_row_or_events(
    committed: tuple[World, TestClient], fresh_database: Database, as_: Headers, job: str,
    builds: list[str],
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    first = _read(client, job, headers)
    assert _read(client, job, headers) == first
    assert builds == [job]  # the second answer came from the caches

    with fresh_database.transaction() as session:  # as the tracker would, behind the API's back
        row = session.scalars(select(Job).where(Job.public_id == job)).one()
        row.pending_reason = "Priority"
    assert _read(client, job, headers)["pending_reason"] == "Priority"

    with fresh_database.transaction() as session:
        row = session.scalars(select(Job).where(Job.public_id == job)).one()
        transition(session, row, JobState.running)
    after = _read(client, job, headers)
    assert after["state"] == "running"
    assert [e["to_state"] for e in after["events"]][-1] == "running"
    assert builds == [job, job, job]


def test_an_event_alone_makes_the_next_answer_new(
    committed: tuple[World, TestClient], fresh_database: Database, as_: Headers, job: str,
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    before = _read(client, job, headers)
    with fresh_database.transaction() as session:
        job_id = session.scalars(select(Job.id).where(Job.public_id == job)).one()
        session.add(JobEvent(job_id=job_id, at=utcnow(), from_state=JobState.pending,
                             to_state=JobState.pending, detail="requeued"))
    after = _read(client, job, headers)
    assert len(after["events"]) == len(before["events"]) + 1
    assert after["events"][-1]["detail"] == "requeued"


def _demote(session: Any, world: World) -> None:
    session.execute(update(Membership).where(Membership.user_id == world.researcher.id)
                    .values(role=Role.viewer))


def _remove(session: Any, world: World) -> None:
    session.execute(delete(Membership).where(Membership.user_id == world.researcher.id))


def _disable(session: Any, world: World) -> None:
    session.execute(update(User).where(User.id == world.researcher.id).values(is_active=False))


@pytest.mark.parametrize(("change", "status"), [(_demote, 403), (_remove, 404), (_disable, 401)])
def test_a_change_to_the_callers_rights_is_seen_by_the_next_read(
    *, committed: tuple[World, TestClient], fresh_database: Database, as_: Headers, job: str,
    change: Callable[[Any, World], None], status: int,
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    _read(client, job, headers)
    _read(client, job, headers)

    with fresh_database.transaction() as session:
        change(session, world)

    refused = client.get(f"/api/v1/jobs/{job}", headers=headers)
    assert refused.status_code == status, refused.text
    assert refused.headers["content-type"] == "application/problem+json"


def test_a_cached_caller_gets_404_for_another_members_cached_job(
    committed: tuple[World, TestClient], as_: Headers, job: str,
) -> None:
    world, client = committed
    theirs = submit(client, as_(world.stranger), world.other_project).json()["id"]
    _read(client, theirs, as_(world.stranger))  # their answer is cached
    _read(client, job, as_(world.researcher))  # and so is our caller
    refused = client.get(f"/api/v1/jobs/{theirs}", headers=as_(world.researcher))
    assert refused.status_code == 404
    assert "marker" not in refused.json() and "script" not in refused.json()


def test_a_cached_caller_is_authenticated_again_after_its_lifetime_or_its_tokens_expiry(
    committed: tuple[World, TestClient], as_: Headers, job: str, builds: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, client = committed
    token = client.post("/api/v1/me/tokens", headers=as_(world.researcher), json={
        "name": "poller", "scopes": ["jobs:read"],
        "expires_at": (utcnow() + timedelta(seconds=30)).isoformat()}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    _read(client, job, headers)
    _read(client, job, headers)
    assert builds == [job]

    later = utcnow() + timedelta(seconds=31)  # past the token's expiry, within the lifetime
    monkeypatch.setattr("gateway.auth.authenticator.utcnow", lambda: later)
    monkeypatch.setattr("gateway.auth.principal.utcnow", lambda: later)
    refused = client.get(f"/api/v1/jobs/{job}", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "this access token has expired"


@pytest.fixture
def epoch_of(fresh_database: Database) -> Callable[[], int]:
    def epoch() -> int:
        with fresh_database.transaction() as session:
            return session.scalars(select(AuthEpoch.value)).one()
    return epoch


def test_the_triggers_bump_the_epoch_on_what_a_principal_is_made_of_and_only_then(
    committed: tuple[World, TestClient], fresh_database: Database, epoch_of: Callable[[], int],
) -> None:
    world, _ = committed
    changes = [
        "UPDATE users SET is_admin = TRUE WHERE id = :user",
        "UPDATE users SET is_active = FALSE WHERE id = :user",
        "UPDATE memberships SET role = 'viewer' WHERE user_id = :user",
        "DELETE FROM memberships WHERE user_id = :user",
        "UPDATE members SET status = 'suspended' WHERE id = :member",
    ]
    for statement in changes:
        before = epoch_of()
        with fresh_database.transaction() as session:
            session.execute(text(statement), {"user": world.stranger.id,
                                              "member": world.globex.id})
        assert epoch_of() > before, statement
    before = epoch_of()
    with fresh_database.transaction() as session:  # not part of a principal
        session.execute(text("UPDATE users SET name = 'renamed' WHERE id = :user"),
                        {"user": world.stranger.id})
    assert epoch_of() == before


def test_the_triggers_bump_a_jobs_revision_on_any_update_and_on_its_events(
    committed: tuple[World, TestClient], fresh_database: Database, as_: Headers, job: str,
) -> None:
    def revision() -> int:
        with fresh_database.transaction() as session:
            return session.scalars(select(Job.revision).where(Job.public_id == job)).one()

    start = revision()
    with fresh_database.transaction() as session:
        session.execute(text("UPDATE jobs SET detail = 'x' WHERE public_id = :job"), {"job": job})
    assert revision() == start + 1
    with fresh_database.transaction() as session:
        job_id = session.scalars(select(Job.id).where(Job.public_id == job)).one()
        session.add(JobEvent(job_id=job_id, at=utcnow(), from_state=None,
                             to_state=JobState.pending))
    assert revision() == start + 2


@pytest.fixture
def authentications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The credentials the authenticator read from the database (a kept caller is not read)."""
    done: list[str] = []
    def counted(session: Any, token: str, *args: Any) -> Any:
        done.append(token)
        return read_principal(session, token, *args)

    monkeypatch.setattr(authenticator, "read_principal", counted)
    return done


def test_a_submitter_is_authenticated_once_then_kept_while_nothing_changes(
    committed: tuple[World, TestClient], as_: Headers, authentications: list[str],
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    for _ in range(3):
        answer = submit(client, headers, world.project)
        assert answer.status_code == 201, answer.text
    assert authentications == [headers["Authorization"].removeprefix("Bearer ")]


@pytest.mark.parametrize(("change", "status"), [(_demote, 403), (_remove, 404), (_disable, 401)])
def test_a_change_to_a_kept_submitters_rights_is_seen_by_its_next_submission(
    *, committed: tuple[World, TestClient], fresh_database: Database, as_: Headers,
    authentications: list[str], change: Callable[[Any, World], None], status: int,
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    for _ in range(2):
        assert submit(client, headers, world.project).status_code == 201
    assert len(authentications) == 1

    with fresh_database.transaction() as session:
        change(session, world)

    refused = submit(client, headers, world.project)
    assert refused.status_code == status, refused.text
    assert len(authentications) == 2


def _break_loop_connection(client: TestClient, database: Database) -> None:
    """What a restarted database server or a closed file does to the loop's connection."""
    reads: LoopReads = client.app.state.loop_reads  # type: ignore[attr-defined]
    if database.dialect == "postgresql":
        with database.engine.connect() as conn:
            killed = conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"),
                {"name": APPLICATION_NAME}).all()
        assert killed == [(True,)]
    else:
        assert reads._sqlite_connection is not None
        reads._sqlite_connection.close()


def test_a_read_the_event_loop_cannot_make_is_made_the_usual_way_and_its_connection_again(
    *, committed: tuple[World, TestClient], fresh_database: Database, as_: Headers, job: str,
    builds: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    _read(client, job, headers)
    _read(client, job, headers)
    assert builds == [job]  # the second from the caches, checked on the loop's connection

    _break_loop_connection(client, fresh_database)
    assert _read(client, job, headers)["id"] == job  # by the route, in a worker thread
    assert _read(client, job, headers)["id"] == job  # the loop's connection made again
    assert builds == [job]
    assert submit(client, headers, world.project).status_code == 201

    reads: LoopReads = client.app.state.loop_reads  # type: ignore[attr-defined]

    async def unreachable(*_: Any, **__: Any) -> None:
        raise LoopReadFailed("the server is down")

    monkeypatch.setattr(reads, "all", unreachable)  # `first` reads through it too
    assert _read(client, job, headers)["id"] == job
    assert submit(client, headers, world.project).status_code == 201


def test_reads_that_miss_together_build_the_answer_once(
    committed: tuple[World, TestClient], as_: Headers, job: str, builds: list[str],
) -> None:
    """The reads of a caller whose kept principal has just expired all miss at once: one
    builds, the others wait for it and take the cached answer."""
    world, client = committed
    headers = as_(world.researcher)
    app = client.app

    async def together() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as reader:
            answers = await asyncio.gather(*(
                reader.get(f"/api/v1/jobs/{job}", headers=headers) for _ in range(40)))
        return [a.status_code for a in answers]

    assert client.portal is not None
    assert client.portal.call(together) == [200] * 40
    assert builds == [job]


def test_polls_arriving_together_share_their_reads_and_each_gets_its_job(
    committed: tuple[World, TestClient], as_: Headers, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 polls of 4 jobs at once: each answered its own job at its current revision, with
    fewer reads than polls (the heads asked in one turn of the event loop, or while a read is
    on its way, are read together)."""
    world, client = committed
    headers = as_(world.researcher)
    jobs = [submit(client, headers, world.project).json()["id"] for _ in range(4)]
    loop_reads: LoopReads = client.app.state.loop_reads  # type: ignore[attr-defined]
    batches: list[int] = []
    read_all = loop_reads.all

    async def counted(statement: Any, parameters: Any = None) -> Any:
        batches.append(len((parameters or {}).get("public_ids", [None])))
        return await read_all(statement, parameters)

    monkeypatch.setattr(loop_reads, "all", counted)

    async def together() -> list[tuple[int, str, str]]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as reader:
            answers = await asyncio.gather(*(
                reader.get(f"/api/v1/jobs/{jobs[k % 4]}", headers=headers)
                for k in range(40)))
        return [(a.status_code, a.json()["id"], a.headers["etag"]) for a in answers]

    assert client.portal is not None
    answers = client.portal.call(together)
    current = {job: client.get(f"/api/v1/jobs/{job}", headers=headers).headers["etag"]
               for job in jobs}
    assert answers == [(200, jobs[k % 4], current[jobs[k % 4]]) for k in range(40)]
    assert 0 < len(batches) < 40 and max(batches) > 1, batches


def test_a_poll_that_goes_away_does_not_take_the_shared_read_with_it(
    committed: tuple[World, TestClient], as_: Headers,
) -> None:
    world, client = committed
    headers = as_(world.researcher)
    job = submit(client, headers, world.project).json()["id"]
    reads: JobReads = client.app.state.job_reads  # type: ignore[attr-defined]

    async def one_leaves() -> tuple[bool, Any]:
        leaving = asyncio.ensure_future(reads.head(job))
        staying = asyncio.ensure_future(reads.head(job))
        await asyncio.sleep(0)
        waiting = not leaving.done()  # for the read both share
        leaving.cancel()
        return waiting, await staying

    assert client.portal is not None
    waiting, head = client.portal.call(one_leaves)
    assert waiting
    assert head is not None and head.member_id == world.acme.id
    assert client.portal.call(reads.head, job) is not None  # and the next poll reads again
