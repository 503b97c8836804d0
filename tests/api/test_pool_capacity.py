"""Many more concurrent requests than the pool has connections: every one is answered.

A route on SessionDep holds its connection across worker-thread hops (dependencies, body,
commit). If every worker thread waits for a connection while every connection waits for a
thread, nothing moves until the pool's timeout turns the lot into 500s. The app must make the
surplus requests wait without a thread or a connection, and leave a connection to the work that
takes and gives back its own within one thread (Caller, Reader, JobService)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

import anyio
import httpx
import pytest
from factories import auth_headers, make_member, make_user
from fastapi import Depends, FastAPI, Request
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from consortium.models import Role
from gateway.api.app import API_PREFIX, create_app
from gateway.api.deps import Caller, SessionDep
from gateway.db import Database
from gateway.settings import Settings

# Far more requests than anyio's 40 worker threads, and a pool of two connections that gives
# up after 3 s: a deadlock shows as 500s after 3 s, not as a hung test.
REQUESTS = 300
POOL = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 3}
BOUND_S = 30.0
ME = f"{API_PREFIX}/me"
CANCEL = f"{API_PREFIX}/jobs/000000000000/cancel"  # Caller, then JobService: a 404


@pytest.fixture
def small_pool(fresh_database: Database) -> Iterator[Database]:
    db = Database(fresh_database.url, **POOL)
    yield db
    db.dispose()


@pytest.fixture
def headers(small_pool: Database, settings: Settings) -> dict[str, str]:
    with small_pool.transaction() as session:
        member = make_member(session)
        user = make_user(session, roles={member: Role.researcher})
        return auth_headers(settings, user)


Send = Callable[[str, str], Awaitable[int]]


def run(app: FastAPI, headers: dict[str, str], scenario: Callable[[Send], Awaitable[None]]
        ) -> None:
    """Run `scenario` with a client of `app`, all of it within BOUND_S."""
    async def main() -> None:
        # a server error is an answer (500), as a real server would send it
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     headers=headers, timeout=BOUND_S) as client:
            async def send(method: str, path: str) -> int:
                return (await client.request(method, path)).status_code

            with anyio.fail_after(BOUND_S):
                await scenario(send)

    anyio.run(main)


async def at_once(send: Send, calls: list[tuple[str, str]]) -> list[int]:
    """Send every (method, path) concurrently; the statuses in order."""
    statuses = [0] * len(calls)

    async def one(i: int, method: str, path: str) -> None:
        statuses[i] = await send(method, path)

    async with anyio.create_task_group() as tg:
        for i, (method, path) in enumerate(calls):
            tg.start_soon(one, i, method, path)
    return statuses


def counts(statuses: list[int]) -> dict[int, int]:
    return {s: statuses.count(s) for s in set(statuses)}


def test_pool_capacity_is_the_pools_size_plus_its_overflow(
        small_pool: Database, fresh_database: Database) -> None:
    assert small_pool.pool_capacity == 2
    assert fresh_database.pool_capacity == (30 if fresh_database.dialect == "postgresql" else 15)
    unpooled = create_engine(fresh_database.url, poolclass=NullPool)
    assert Database(fresh_database.url, engine=unpooled).pool_capacity is None


def test_requests_far_beyond_the_pool_on_a_session_route_all_succeed(
        small_pool: Database, settings: Settings, headers: dict[str, str]) -> None:
    statuses: list[int] = []

    async def scenario(send: Send) -> None:
        statuses.extend(await at_once(send, [("GET", ME)] * REQUESTS))

    run(create_app(settings, database=small_pool), headers, scenario)
    assert statuses == [200] * REQUESTS, counts(statuses)


def test_session_routes_and_single_thread_routes_together_all_answer(
        small_pool: Database, settings: Settings, headers: dict[str, str]) -> None:
    statuses: list[int] = []

    async def scenario(send: Send) -> None:
        statuses.extend(await at_once(send, [("GET", ME), ("POST", CANCEL)] * (REQUESTS // 2)))

    run(create_app(settings, database=small_pool), headers, scenario)
    me, cancel = statuses[0::2], statuses[1::2]
    assert me == [200] * len(me), counts(me)
    assert cancel == [404] * len(cancel), counts(cancel)


async def between_hops(request: Request) -> None:
    """A dependency that waits for the test's signal: its request keeps its connection, taken
    by authentication in one worker thread, until the route's body runs in another."""
    await request.app.state.gate.wait()


def held(principal: Caller, session: SessionDep,
         _: Annotated[None, Depends(between_hops)]) -> int:
    return int(session.scalar(text("SELECT 1")) or 0)


def test_single_thread_work_gets_a_connection_while_session_requests_wait_for_threads(
        small_pool: Database, settings: Settings, headers: dict[str, str]) -> None:
    """The worst moment, made on purpose: session requests that hold their connection between
    two thread hops, while a flood of single-thread requests takes every worker thread. Were the
    whole pool theirs, those threads would all wait for a connection that waits for a thread."""
    app = create_app(settings, database=small_pool)
    app.add_api_route("/held", held)
    capacity = POOL["pool_size"] + POOL["max_overflow"]
    held_statuses: list[int] = []
    flood: list[int] = []

    async def scenario(send: Send) -> None:
        app.state.gate = anyio.Event()

        async def hold() -> None:
            held_statuses.extend(await at_once(send, [("GET", "/held")] * capacity))

        async def cancel_many() -> None:
            flood.extend(await at_once(send, [("POST", CANCEL)] * REQUESTS))

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await anyio.sleep(0.5)  # the admitted ones are now waiting at the gate
            tg.start_soon(cancel_many)
            await anyio.sleep(0.5)  # every worker thread is now taken by the flood
            app.state.gate.set()

    run(app, headers, scenario)
    assert held_statuses == [200] * capacity, counts(held_statuses)
    assert flood == [404] * REQUESTS, counts(flood)
