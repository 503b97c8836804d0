"""An unexpected error costs milliseconds and a bounded amount of log, in every logging mode
(JSON for `hpcgw serve`, console lines for `hpcgw demo`): the traceback is Python's plain one,
without local variables, headers or tokens, logged once with its request id. Measured on a real
server process (failing_gateway.py: the served app with one route that fails)."""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess

from gateway.api.errors import PROBLEM_JSON
from gateway.db import Database
from gateway.logging import MESSAGE_CHARS, TRACEBACK_CHARS, bounded_traceback

SCRIPT = Path(__file__).with_name("failing_gateway.py")
LOCAL_SECRET = "local-value-never-to-be-logged".upper()  # as failing_gateway.py holds it
TOKEN = "hpcgw_pat_" + "T0kenNeverToBeLogged" * 2
ERRORS = 20
LOG_BYTES_PER_ERROR = 16 * 1024
SECONDS_PER_ERROR = 0.5  # generous: the incident's errors took ~8 s each


@pytest.fixture(params=["json", "console"])
def server(request: pytest.FixtureRequest, fresh_database: Database,
           tmp_path: Path) -> Iterator[ServerProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")} | {
        "HPCGW_SECRET_KEY": secrets.token_urlsafe(48), "HPCGW_DATABASE_URL": fresh_database.url,
        "HPCGW_DATA_DIR": str(tmp_path), "HPCGW_LOG_JSON": str(request.param == "json"),
    }
    process = ServerProcess(sys.executable, [str(SCRIPT)], env, tmp_path / "server.log")
    try:
        process.wait_healthy()
        yield process
    finally:
        process.stop()


def test_an_unexpected_error_costs_milliseconds_and_a_bounded_log_without_secrets(
        server: ServerProcess) -> None:
    # a connection each: uvicorn closes the one an unhandled error went through
    url = f"{server.url}/test/unexpected"
    assert httpx.get(url, timeout=30).status_code == 500  # the first reads the source files
    logged_before = server.log.stat().st_size
    request_ids = []
    for _ in range(ERRORS):
        started = time.perf_counter()
        answer = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        seconds = time.perf_counter() - started
        assert answer.status_code == 500
        assert answer.headers["content-type"] == PROBLEM_JSON
        assert seconds < SECONDS_PER_ERROR, seconds
        request_ids.append(answer.json()["request_id"])
        assert answer.headers["x-request-id"] == request_ids[-1]
    with server.log.open("rb") as log:
        log.seek(logged_before)
        logged = log.read().decode()

    assert len(logged) / ERRORS < LOG_BYTES_PER_ERROR, len(logged) / ERRORS
    assert logged.count("RuntimeError: a bug") == ERRORS  # once each, uvicorn's echo dropped
    assert "Exception in ASGI application" not in logged
    assert all(request_id in logged for request_id in request_ids)
    assert LOCAL_SECRET not in logged
    assert TOKEN not in logged and "T0kenNeverToBeLogged" not in logged


def _recurse(depth: int, message: str) -> None:
    if depth:
        _recurse(depth - 1, message)
    raise ValueError(message)


def _formatted(message: str, depth: int = 0) -> str:
    try:
        _recurse(depth, message)
    except ValueError as exc:
        return bounded_traceback((type(exc), exc, exc.__traceback__))
    raise AssertionError("not raised")


def test_a_traceback_keeps_its_innermost_frames_within_a_bound_and_masks_tokens() -> None:
    text = _formatted("Bearer eyJhbGciOiJIUzI1NiJ9.payload.signature", depth=500)
    assert len(text) < TRACEBACK_CHARS + 100
    assert "in _recurse\n    raise ValueError(message)\n" in text  # the innermost frame
    assert text.rstrip().endswith("ValueError: Bearer [redacted]")
    assert "eyJhbGciOiJIUzI1NiJ9" not in bounded_traceback(
        (ValueError, ValueError("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.p.s"), None))


def test_a_long_message_is_cut_and_leaves_the_frames_in() -> None:
    text = _formatted("x" * 100_000, depth=5)
    # every frame, the outermost too, none pushed out of the kept end by the message
    assert "in _formatted" in text and "in _recurse\n    raise ValueError(message)\n" in text
    assert f"ValueError: {'x' * (MESSAGE_CHARS - len('ValueError: '))} " \
        f"[{100_000 + len('ValueError: ') + 1 - MESSAGE_CHARS} characters cut]" in text
    assert len(text) < 2 * MESSAGE_CHARS + 6 * 200


@pytest.mark.parametrize("secret", [
    "hpcgw_rt_" + "R3freshNeverToBeLogged",
    "hpcgw_pat_" + "P4tNeverToBeLogged",
    "whsec_" + "W3bhookNeverToBeLogged",
    # a bare JWT (an OIDC provider's token, the gateway's access token) without `Bearer`
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlTmV2ZXJUb0JlTG9nZ2Vk",
])
def test_refresh_tokens_webhook_secrets_and_bare_jwts_are_masked(secret: str) -> None:
    text = _formatted(f"refused {secret!r} for ada")
    assert secret[-12:] not in text
    assert "[redacted]" in text and "for ada" in text
