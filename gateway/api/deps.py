"""Dependencies of the routes, as Annotated aliases: the one place a route gets what it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Annotated, Any, TypeVar
from weakref import WeakKeyDictionary

import anyio
from anyio.lowlevel import RunVar
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.authz import Principal
from consortium.errors import Unauthenticated
from gateway.auth.authenticator import Authenticator
from gateway.auth.principal import bearer_token
from gateway.db import Database
from gateway.jobs.service import JobService
from gateway.settings import Settings
from schedulers.base import Scheduler

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
T = TypeVar("T")


# Dependencies that only read the app's state are `async`: FastAPI runs a plain `def` one in a
# worker thread, and each such hop costs about 0.1 ms and a GIL hand-off.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]


# A request's session (SessionDep) holds its pool connection across worker-thread hops: taken in
# one (dependencies), used in the route's, given back in a third (commit). Were every worker
# thread waiting for a connection while every connection waited for a thread, nothing would move
# until the pool's timeout: 500s. So these sessions are admitted by a limiter that requests wait
# on in the event loop, holding neither thread nor connection, and it admits one fewer than the
# pool holds. That last connection is for the work that takes and gives back its connection
# within a single thread (the authenticator, Reader, JobService, the trackers and workers): a
# thread of theirs waiting for a connection never waits on one that waits for a thread.
_session_slots: RunVar[WeakKeyDictionary[Database, anyio.CapacityLimiter]] = RunVar(
    "hpcgw_session_slots"
)


def _session_limiter(database: Database) -> anyio.CapacityLimiter | None:
    """The database's limiter of sessions on the running event loop (a limiter belongs to one
    loop); None when its pool never makes a checkout wait. A pool of one connection leaves none
    over for the single-thread work: give the gateway two or more."""
    capacity = database.pool_capacity
    if capacity is None:
        return None
    try:
        limiters = _session_slots.get()
    except LookupError:
        limiters = WeakKeyDictionary()
        _session_slots.set(limiters)
    limiter = limiters.get(database)
    if limiter is None:
        limiter = limiters[database] = anyio.CapacityLimiter(max(1, capacity - 1))
    return limiter


async def session_slot(database: DatabaseDep) -> AsyncIterator[None]:
    """Admission of one request's session; held until the session is closed (get_session depends
    on it, and FastAPI ends a request's dependencies in the reverse order it started them)."""
    limiter = _session_limiter(database)
    if limiter is None:
        yield
        return
    slot = object()  # released by whichever task ends the dependencies
    await limiter.acquire_on_behalf_of(slot)
    try:
        yield
    finally:
        limiter.release_on_behalf_of(slot)


def get_session(
    request: Request,
    database: DatabaseDep,
    _slot: Annotated[None, Depends(session_slot, scope="function")],
) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.
    Writing requests take SQLite's write lock up front (see gateway.db)."""
    with database.transaction(write=request.method not in _READ_METHODS) as session:
        yield session


# scope="function": commit before the response is sent, so a failed commit is the client's error
# and not a 201 for data that never landed (and the slot is free again before the response).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _from_trusted_proxy(peer: str | None, settings: Settings) -> bool:
    if not peer or not settings.trusted_proxies:
        return False
    try:
        return any(ip_address(peer) in ip_network(n) for n in settings.trusted_proxies)
    except ValueError:
        return False


def client_address(request: Request, settings: Settings) -> str | None:
    """The client's address; X-Forwarded-For is believed only from a configured proxy."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and _from_trusted_proxy(peer, settings):
        return forwarded.split(",")[-1].strip() or peer
    return peer


def is_https(request: Request, settings: Settings) -> bool:
    """Whether the client reached us over TLS; X-Forwarded-Proto is believed only from a
    configured proxy (which terminates TLS in front of the gateway)."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else None
    proto = request.headers.get("x-forwarded-proto", "")
    return _from_trusted_proxy(peer, settings) and proto.split(",")[-1].strip() == "https"


async def get_context(request: Request, settings: SettingsDep) -> RequestContext:
    return RequestContext(
        request_id=getattr(request.state, "request_id", None),
        client_addr=client_address(request, settings),
    )


ContextDep = Annotated[RequestContext, Depends(get_context)]


# Declared for OpenAPI only (the lock in /docs, "Authorize" with the password flow, and the
# security requirement schema-driven fuzzers read); get_caller() reads the header itself.
_login_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token", scheme_name="login", auto_error=False,
    description="email and password for a short-lived session token",
)
_token_scheme = HTTPBearer(
    scheme_name="token", auto_error=False,
    description="a personal access token (hpcgw_pat_...) or an OIDC provider's token",
)


# The security requirement of a route that takes Caller, for a route that authenticates its
# credential itself (in openapi_extra): GET /jobs/{id}, where the dependencies of those schemes
# and the Caller's, solved on each request, were a third of the cost of a poll.
CALLER_SECURITY: dict[str, Any] = {"security": [{_login_scheme.scheme_name: []},
                                                {_token_scheme.scheme_name: []}]}


def credential_of(request: Request) -> str:
    """The request's bearer token; 401 without one."""
    credential = bearer_token(request.headers.get("authorization", ""))
    if credential is None:
        raise Unauthenticated("a bearer token is required")
    return credential


async def get_caller(
    request: Request,
    _login: Annotated[str | None, Depends(_login_scheme)],
    _token: Annotated[HTTPAuthorizationCredentials | None, Depends(_token_scheme)],
) -> Principal:
    """The caller of the request's bearer token (gateway.auth.authenticator). It holds no
    connection or lock afterwards, so an async route may await a cluster with it."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.caller(credential_of(request))


Caller = Annotated[Principal, Depends(get_caller)]


async def get_optional_caller(
    request: Request,
    _login: Annotated[str | None, Depends(_login_scheme)],
    _token: Annotated[HTTPAuthorizationCredentials | None, Depends(_token_scheme)],
) -> Principal | None:
    """For a public route that also serves signed-in callers: None without an Authorization
    header; a credential that is presented must be valid (401 otherwise)."""
    if "authorization" not in request.headers:
        return None
    return await get_caller(request, _login, _token)


OptionalCaller = Annotated[Principal | None, Depends(get_optional_caller)]


# Threads of a process that run reads at once. Reads are short and mostly CPU (SQLAlchemy, the
# driver): more threads than this only take turns at the GIL, and each turn costs a context
# switch; measured at 50 and 500 clients, 40 threads cost ~1.3x the CPU per read of 2.
READ_THREADS = 2
_read_limiter: RunVar[anyio.CapacityLimiter] = RunVar("hpcgw_read_limiter")


def read_threads() -> anyio.CapacityLimiter:
    """The reads' limiter of the running event loop (one per loop, as anyio's own)."""
    try:
        return _read_limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(READ_THREADS)
        _read_limiter.set(limiter)
        return limiter


@dataclass(frozen=True)
class Reader:
    """A read route's database work: one short read transaction in one worker thread. One
    thread hop per request instead of one per sync dependency, and the pool connection is
    taken and given back within that hop (a session held across hops can starve the pool
    when every worker thread waits for a connection)."""

    database: Database

    async def __call__(self, read: Callable[[Session], T]) -> T:
        def run() -> T:
            with self.database.transaction(write=False) as session:
                return read(session)
        return await anyio.to_thread.run_sync(run, limiter=read_threads())


async def get_reader(database: DatabaseDep) -> Reader:
    return Reader(database)


ReaderDep = Annotated[Reader, Depends(get_reader)]


async def get_jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


JobServiceDep = Annotated[JobService, Depends(get_jobs)]


async def get_schedulers(request: Request) -> Mapping[str, Scheduler]:
    schedulers: Mapping[str, Scheduler] = request.app.state.schedulers
    return schedulers


# the configured clusters' backends, shared with the job service and the trackers
SchedulersDep = Annotated[Mapping[str, Scheduler], Depends(get_schedulers)]
