"""Request bodies are capped while they are read, and the body of a write is read only once its
credential has been checked: a large body costs an anonymous or forged caller nothing on the
server, neither time nor memory.

The live tests run `hpcgw serve` as a process and speak HTTP/1.1 over a raw socket, so that the
answer is timed from the request's head, while the body is still being sent."""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from factories import auth_headers, make_cast, make_user
from fastapi.testclient import TestClient
from server_process import ServerProcess

from gateway.api.app import API_PREFIX, create_app
from gateway.api.errors import PROBLEM_JSON
from gateway.api.middleware import PUBLIC_WRITES
from gateway.auth.sessions import issue_access_token
from gateway.db import Database
from gateway.settings import Settings

MiB = 1024 * 1024
BIG = 48 * MiB  # the body of the incident
RSS_GROWTH_BOUND = 20 * MiB
ANSWER_BOUND_S = 0.5  # "milliseconds", measured generously on a shared two-core machine
MEMBERS = f"{API_PREFIX}/members"
JOBS = f"{API_PREFIX}/jobs"


def _json_of(size: int) -> bytes:
    """A JSON document of about `size` bytes that is costly to parse: many small objects."""
    item = b'{"a":1},'
    return b'{"items":[' + item * (size // len(item)) + b'{"a":1}]}'


# --- in process --------------------------------------------------------------------------


class Tracked:
    """A request body sent as chunks (no Content-Length) that records whether it was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.consumed = False

    def __iter__(self) -> Iterator[bytes]:
        self.consumed = True
        yield self.data


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token",
                                           "Bearer hpcgw_pat_" + "x" * 40])
def test_a_write_without_a_valid_credential_is_refused_before_its_body_is_read(
        app_client: TestClient, authorization: str | None) -> None:
    body = Tracked(b'{"slug": "acme", "name": "Acme", "kind": "company"}')
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    answer = app_client.post(MEMBERS, content=body, headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.headers["www-authenticate"] == "Bearer"
    assert not body.consumed


def test_a_write_with_a_valid_credential_is_read_and_answered_by_its_route(
        app_client: TestClient, settings: Settings, session: Any) -> None:
    admin = make_cast(session).admin
    body = Tracked(b'{"slug": "initech", "name": "Initech", "kind": "company"}')
    answer = app_client.post(MEMBERS, content=body,
                             headers={**auth_headers(settings, admin),
                                      "Content-Type": "application/json"})
    assert answer.status_code == 201, answer.text
    assert body.consumed


def test_the_public_writes_take_their_body_without_a_token(app_client: TestClient) -> None:
    answer = app_client.post(f"{API_PREFIX}/auth/token",
                             data={"grant_type": "password", "username": "nobody@x.test",
                                   "password": "wrong-password"})
    assert answer.status_code == 401  # refused by the login, after reading the form
    assert answer.json()["detail"] != "a bearer token is required"


@pytest.fixture
def small(settings: Settings, database: Database) -> Iterator[TestClient]:
    capped = settings.model_copy(update={"max_body_bytes": 1000})
    with TestClient(create_app(capped, database=database)) as client:
        yield client


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_refused_413_as_problem_json(
        small: TestClient, settings: Settings, session: Any, chunked: bool) -> None:
    admin = make_cast(session).admin
    headers = {**auth_headers(settings, admin), "Content-Type": "application/json"}
    at_cap = b'{"slug": "initech", "name": "' + b"x" * 950 + b'", "kind": "company"}'
    at_cap = at_cap[:-21] + b" " * (1000 - len(at_cap)) + at_cap[-21:]
    assert len(at_cap) == 1000

    def send(data: bytes) -> Any:
        return small.post(MEMBERS, content=Tracked(data) if chunked else data, headers=headers)

    assert send(at_cap).status_code == 422  # read and validated (the name is too long)
    answer = send(at_cap + b" ")
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    problem = answer.json()
    assert (problem["status"], problem["instance"]) == (413, MEMBERS)
    assert "1000 bytes" in problem["detail"]
    assert problem["request_id"] == answer.headers["x-request-id"]


def test_a_form_over_the_cap_is_refused_413(small: TestClient) -> None:
    answer = small.post(f"{API_PREFIX}/auth/token",
                        content=Tracked(b"grant_type=password&password=" + b"x" * 2000),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON


def _example(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_the_guard_refuses_a_body_exactly_where_the_route_would_refuse_the_caller(
        app_client: TestClient) -> None:
    """Without a body the guard stands aside and the route's own authentication answers: an
    anonymous write with a body must be refused unread by the guard on exactly those routes (a
    public route missing from its list would refuse every caller; a route wrongly listed would
    read the body of anyone)."""
    schema = app_client.app.openapi()  # type: ignore[attr-defined]
    checked = 0
    for path, item in schema["paths"].items():
        if not path.startswith(API_PREFIX):
            continue
        for method in sorted(item.keys() & {"post", "put", "patch", "delete"}):
            url = _example(path)
            bare = app_client.request(method, url)
            body = Tracked(b"{}")
            sent = app_client.request(method, url, content=body,
                                      headers={"Content-Type": "application/json"})
            route_refuses = (bare.status_code == 401
                             and bare.json()["detail"] == "a bearer token is required")
            guard_refuses = sent.status_code == 401 and not body.consumed
            assert guard_refuses == route_refuses, (method, path, bare.text, sent.text)
            assert bool(PUBLIC_WRITES.match(url)) == (not route_refuses), (method, path)
            checked += 1
    assert checked > 20


def test_every_operation_that_takes_a_body_documents_413(settings: Settings,
                                                         database: Database) -> None:
    schema = create_app(settings, database=database).openapi()
    operations = [op for item in schema["paths"].values() for op in item.values()]
    with_body = [op for op in operations if "requestBody" in op]
    assert with_body
    for op in with_body:
        assert PROBLEM_JSON in op["responses"]["413"]["content"], op["operationId"]


# --- a live server -----------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the request's head to the answer's


def _send_body(sock: socket.socket, chunks: Iterable[bytes]) -> None:
    try:
        for chunk in chunks:
            sock.sendall(chunk)
    except OSError:
        return  # the server answered and closed, or the test closed: the rest is not wanted


def exchange(url: str, method: str, path: str, headers: dict[str, str],
             chunks: Iterable[bytes] = ()) -> Answer:
    """The request's head, then its body from another thread while the answer is read."""
    where = urlsplit(url)
    host, port = where.hostname or "", where.port or 80
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, port), timeout=30) as sock:
        started = time.perf_counter()
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
        sender = threading.Thread(target=_send_body, args=(sock, chunks), daemon=True)
        sender.start()
        raw = b""
        while b"\r\n\r\n" not in raw:
            part = sock.recv(65536)
            assert part, f"connection closed without an answer: {raw!r}"
            raw += part
        seconds = time.perf_counter() - started
        status_line, *lines = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        answer_headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        body = raw.split(b"\r\n\r\n", 1)[1]
        while len(body) < int(answer_headers.get("content-length", "0")):
            part = sock.recv(65536)
            assert part, "connection closed within the answer"
            body += part
        with contextlib.suppress(OSError):  # the server may have closed it already
            sock.shutdown(socket.SHUT_RDWR)
    sender.join(timeout=30)
    return Answer(int(status_line.split()[1]), answer_headers, body, seconds)


def _pieces(data: bytes, size: int = MiB) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start:start + size])


def _chunked(data: bytes) -> Iterator[bytes]:
    for piece in _pieces(data):
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def rss(pid: int) -> int:
    """The resident memory of a process, in bytes (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


@dataclass
class Live:
    server: ServerProcess
    valid_token: str


@pytest.fixture(scope="module")
def live(database_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`hpcgw serve` on a database of its own (one user), with a signing key of its own."""
    url = database_factory.fresh()
    database = Database(url)
    with database.transaction() as session:
        user_id = make_user(session, email="someone@acme.test").id
    database.dispose()
    data = tmp_path_factory.mktemp("live")
    key = secrets.token_urlsafe(48)
    env = {"HPCGW_SECRET_KEY": key, "HPCGW_DATABASE_URL": url,
           "HPCGW_DATA_DIR": str(data), "HPCGW_LOG_LEVEL": "WARNING",
           "PATH": str(Path(sys.executable).parent)}
    hpcgw = str(Path(sys.executable).parent / "hpcgw")
    server = ServerProcess(hpcgw, ["serve"], env, data / "server.log")
    try:
        server.wait_healthy()
        yield Live(server, issue_access_token(Settings(secret_key=key), user_id))
    finally:
        server.process.kill()
        server.process.wait(timeout=30)


CASES = {
    # name: (authorization, chunked, statuses)
    "no credential": (None, False, {401, 413}),
    "no credential, chunked": (None, True, {401}),
    "forged token": ("Bearer not-a-token", False, {401, 413}),
    "forged token, chunked": ("Bearer not-a-token", True, {401}),
    "unknown personal token, chunked": ("Bearer hpcgw_pat_" + "x" * 40, True, {401}),
    "valid token, chunked": ("valid", True, {413}),  # read up to the cap, no further
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_48_mb_json_body_is_refused_at_once_and_the_server_grows_by_less_than_20_mib(
        live: Live, case: str) -> None:
    authorization, chunked, statuses = CASES[case]
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if authorization:
        headers["Authorization"] = (f"Bearer {live.valid_token}" if authorization == "valid"
                                    else authorization)

    def send(data: bytes) -> Answer:
        if chunked:
            return exchange(live.server.url, "POST", JOBS,
                            {**headers, "Transfer-Encoding": "chunked"}, _chunked(data))
        return exchange(live.server.url, "POST", JOBS,
                        {**headers, "Content-Length": str(len(data))}, _pieces(data))

    warm = send(_json_of(1024))  # the first use of a path allocates what it keeps
    assert warm.status in (401, 422), warm
    before = rss(live.server.process.pid)
    answer = send(_json_of(BIG))
    after = rss(live.server.process.pid)

    assert answer.status in statuses, answer
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.seconds < ANSWER_BOUND_S, answer.seconds
    assert after - before < RSS_GROWTH_BOUND, (before, after)
    health = exchange(live.server.url, "GET", "/healthz", {"Connection": "close"})
    assert health.status == 200 and health.seconds < ANSWER_BOUND_S, health
