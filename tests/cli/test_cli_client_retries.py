"""The client's policy, on canned answers: retries on 429/503 honouring Retry-After, a POST
retried only when it is safe, the problem+json in one line, each status's exit code."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.cli import profiles
from gateway.cli.client import CliError, Exit, Gateway, exit_for, problem_line
from gateway.cli.profiles import Kind, Profile

PROBLEM = {"Content-Type": "application/problem+json"}


def gateway(answers: list[httpx.Response | Exception], sleeps: list[float],
            seen: list[httpx.Request] | None = None) -> Gateway:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    return Gateway(Profile(url="http://gw.test", kind=Kind.pat, access_token="t"),
                   retries=3, transport=httpx.MockTransport(handle), sleep=sleeps.append)


def problem(status: int, **body: object) -> httpx.Response:
    return httpx.Response(status, headers=PROBLEM, content=json.dumps(body).encode())


def test_429_and_503_are_retried_after_the_time_the_server_asks() -> None:
    sleeps: list[float] = []
    client = gateway([httpx.Response(429, headers={"Retry-After": "7"}),
                      httpx.Response(503), httpx.Response(200, json={"ok": True})], sleeps)
    assert client.call("GET", "/api/v1/jobs") == {"ok": True}
    assert sleeps == [7.0, 2.0]  # Retry-After, then the backoff of the second attempt


def test_retries_stop_and_the_last_answer_decides_the_exit_code() -> None:
    sleeps: list[float] = []
    client = gateway([problem(503, title="Service Unavailable", detail="cluster down")] * 4,
                     sleeps)
    with pytest.raises(CliError) as refused:
        client.call("GET", "/api/v1/jobs")
    assert (refused.value.code, str(refused.value)) == (
        Exit.unreachable, "Service Unavailable: cluster down")
    assert len(sleeps) == 3


def test_a_post_without_idempotency_key_is_not_sent_again_after_a_timeout() -> None:
    seen: list[httpx.Request] = []
    client = gateway([httpx.ReadTimeout("slow"), httpx.Response(201, json={})], [], seen)
    with pytest.raises(CliError) as refused:
        client.call("POST", "/api/v1/jobs", json={})
    assert refused.value.code is Exit.unreachable and len(seen) == 1
    keyed = gateway([httpx.ReadTimeout("slow"), httpx.Response(201, json={"id": "j"})], [], seen)
    assert keyed.call("POST", "/api/v1/jobs", json={},
                      headers={"Idempotency-Key": "k"}) == {"id": "j"}
    assert [r.headers["Idempotency-Key"] for r in seen[1:]] == ["k", "k"]


def test_a_refused_connection_is_retried_then_reported_as_unreachable() -> None:
    sleeps: list[float] = []
    client = gateway([httpx.ConnectError("refused")] * 4, sleeps)
    with pytest.raises(CliError) as refused:
        client.call("GET", "/api/v1/me")
    assert refused.value.code is Exit.unreachable and sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(("answer", "line"), [
    (problem(422, title="Validation failed", detail="invalid request: body.resources.gpus",
             errors=[{"loc": ["body", "resources", "gpus"], "msg": "at most 4 on gpu"},
                     {"loc": ["body", "script"], "msg": "line 3: #SBATCH --x is not allowed"}]),
     "Validation failed: resources.gpus: at most 4 on gpu; script: line 3: #SBATCH --x is "
     "not allowed"),
    (problem(403, type="/problems/quota-exceeded", title="Quota exceeded",
             detail="requested 9 SU, available 1 SU,\nheld 0 SU"),
     "Quota exceeded: requested 9 SU, available 1 SU, held 0 SU"),
    (httpx.Response(502, text="<html>bad gateway</html>"), "502: <html>bad gateway</html>"),
])
def test_a_problem_is_one_line_with_its_title_detail_and_field_messages(
        answer: httpx.Response, line: str) -> None:
    assert problem_line(answer) == line


@pytest.mark.parametrize(("answer", "code"), [
    (problem(403, type="/problems/quota-exceeded"), Exit.quota),
    (problem(403, type="/problems/permission-denied"), Exit.auth),
    (problem(401), Exit.auth), (problem(404), Exit.not_found), (problem(422), Exit.usage),
    (problem(413), Exit.usage), (problem(409), Exit.error), (problem(504), Exit.unreachable),
    (problem(500), Exit.error)])
def test_each_status_has_its_documented_exit_code(answer: httpx.Response, code: Exit) -> None:
    assert exit_for(answer) is code


def test_a_401_renews_the_session_once_and_replays_the_request() -> None:
    seen: list[httpx.Request] = []
    answers: list[Callable[[httpx.Request], httpx.Response]] = [
        lambda r: problem(401, title="Authentication required"),
        lambda r: httpx.Response(200, json={"access_token": "new", "refresh_token": "r2",
                                            "expires_in": 900}),
        lambda r: httpx.Response(200, json={"me": r.headers["Authorization"]})]

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)(request)
    client = Gateway(Profile(url="http://gw.test", kind=Kind.session, access_token="old",
                             refresh_token="r1"), transport=httpx.MockTransport(handle))
    assert client.call("GET", "/api/v1/me") == {"me": "Bearer new"}
    assert seen[1].url.path == "/api/v1/auth/token"
    assert b"refresh_token=r1" in seen[1].content
    assert client.profile.refresh_token == "r2"


def test_a_command_adopts_the_tokens_another_has_just_renewed_instead_of_reusing_the_refresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    profiles.store("lab", Profile(url="http://gw.test", kind=Kind.session, access_token="old",
                                  refresh_token="r1", expires_at=time.time() - 1),
                   make_default=True)
    trades: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/token":
            trades.append(request.content)
            return httpx.Response(200, json={"access_token": "new", "refresh_token": "r2",
                                             "expires_in": 900})
        return httpx.Response(200, json={"token": request.headers["Authorization"]})
    first = Gateway(profiles.load().profiles["lab"], "lab", transport=httpx.MockTransport(handle))
    second = Gateway(profiles.load().profiles["lab"], "lab",
                     transport=httpx.MockTransport(handle))

    assert first.call("GET", "/api/v1/me") == {"token": "Bearer new"}
    assert second.call("GET", "/api/v1/me") == {"token": "Bearer new"}
    assert len(trades) == 1  # r1 was presented once: the gateway would revoke the login else
    assert profiles.load().profiles["lab"].refresh_token == "r2"
