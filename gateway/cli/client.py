"""The HTTP client of the researcher's commands: the profile's bearer token, renewed silently;
retries with backoff on 429 and 503 (honouring Retry-After) and on a connection refused; every
API error turned into one line (the problem+json's title, detail and field messages) and one
documented exit status."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any, ParamSpec, TypeVar

import httpx

from gateway.cli import profiles
from gateway.cli.profiles import Kind, Profile
from gateway.cli.runtime import fail

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"
RETRIED_STATUSES = (429, 503)
MAX_WAIT_SECONDS = 60.0
STREAM_IDLE_SECONDS = 300.0  # the output stream sends nothing while the job writes nothing


class Exit(IntEnum):
    """The exit statuses scripts can rely on (docs/cli.md)."""

    ok = 0
    job_failed = 1  # the job ended other than `completed` (`--wait`)
    usage = 2  # bad options, a script the gateway refuses, a 4xx about the request
    quota = 3  # refused by the member's quota
    not_found = 4
    unreachable = 5  # no answer, or 503/504 after the retries
    auth = 6  # not logged in, login expired, or not allowed
    error = 7  # any other refusal (409) or a server error


class CliError(Exception):
    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.code = code


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A command whose CliError ends it with one line on stderr and its exit status."""
    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            fail(str(exc), int(exc.code))
    return wrapper


def problem_line(response: httpx.Response) -> str:
    """`title: detail (field: message; ...)`, from the API's problem+json, in one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip() or response.reason_phrase
        return f"{response.status_code}: {text}".splitlines()[0]
    title = body.get("title") or response.reason_phrase
    fields = [_field(e) for e in body.get("errors") or [] if isinstance(e, dict)]
    detail = body.get("detail")
    if fields and str(detail).startswith("invalid request:"):
        detail = None  # it only names the fields, which the messages name too
    parts = [str(title), *([str(detail)] if detail else []), "; ".join(fields)]
    return " ".join(": ".join(p for p in parts if p).split())


def _field(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", []) if p not in ("body", "query", "path")]
    return f"{'.'.join(loc)}: {error.get('msg', '')}" if loc else str(error.get("msg", ""))


def exit_for(response: httpx.Response) -> Exit:
    status = response.status_code
    if status == 403 and _problem_type(response).endswith("/quota-exceeded"):
        return Exit.quota
    if status in (401, 403):
        return Exit.auth
    if status == 404:
        return Exit.not_found
    if status in (400, 413, 422):
        return Exit.usage
    if status in (429, 503, 504):
        return Exit.unreachable
    return Exit.error


def _problem_type(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


def retry_after(response: httpx.Response, attempt: int) -> float:
    """Retry-After (seconds) when the server gives it, else 1, 2, 4 ... seconds."""
    given = response.headers.get("Retry-After", "")
    seconds = float(given) if given.isdigit() else float(2 ** attempt)
    return min(seconds, MAX_WAIT_SECONDS)


class Gateway:
    """One gateway, as one profile reaches it. `profile_name` None: the profile is not saved
    (HPCGW_TOKEN, or a login in progress)."""

    def __init__(self, profile: Profile, profile_name: str | None = None, *,
                 retries: int | None = None, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.profile = profile
        self.profile_name = profile_name
        self.retries = int(os.environ.get("HPCGW_RETRIES", "4")) if retries is None else retries
        self._sleep = sleep
        self.http = httpx.Client(base_url=profile.url.rstrip("/"), transport=transport,
                                 timeout=httpx.Timeout(60.0, connect=10.0))

    @classmethod
    def open(cls, profile_name: str | None) -> Gateway:
        """The gateway of HPCGW_TOKEN (with HPCGW_URL), else of the selected profile."""
        token = os.environ.get("HPCGW_TOKEN")
        if token:
            url = os.environ.get("HPCGW_URL", DEFAULT_URL)
            return cls(Profile(url=url, kind=Kind.pat, access_token=token))
        name = profiles.selected(profile_name)
        profile = profiles.load().profiles.get(name)
        if profile is None:
            raise CliError(f"not logged in (profile {name!r}): run `hpcgw login URL`",
                           Exit.auth)
        return cls(profile, name)

    # --- tokens -----------------------------------------------------------------------------

    def _headers(self, given: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.profile.access_token}", **(given or {})}

    def _renew_if_expired(self) -> None:
        if self.profile.refresh_token and self.profile.expired():
            self.renew()

    def renew(self) -> None:
        """New tokens: those another command has just saved, else the refresh token traded
        (each is used once), under the profiles' lock."""
        if self.profile_name is None:
            self._trade()
            return
        with profiles.locked():
            stored = profiles.load().profiles.get(self.profile_name)
            if (stored is not None and stored.access_token != self.profile.access_token
                    and not stored.expired()):
                self.profile = stored
                return
            self._trade()

    def _trade(self) -> None:
        p = self.profile
        if not p.refresh_token:
            raise CliError("the login has expired: run `hpcgw login` again", Exit.auth)
        data = {"grant_type": "refresh_token", "refresh_token": p.refresh_token}
        if p.kind is Kind.oidc:
            if not p.token_endpoint or not p.client_id:
                raise CliError("the OIDC profile is incomplete: run `hpcgw login` again",
                               Exit.auth)
            answer = self.send("POST", p.token_endpoint, data={**data, "client_id": p.client_id})
        else:
            answer = self.send("POST", f"{API}/auth/token", data=data)
        if answer.status_code in (400, 401):
            raise CliError("the login has expired: run `hpcgw login` again", Exit.auth)
        self.check(answer)
        self.accept_tokens(answer.json())

    def accept_tokens(self, tokens: dict[str, Any]) -> None:
        """Keep an OAuth2 token response's tokens (a refresh token not renewed is kept)."""
        self.profile.access_token = str(tokens["access_token"])
        self.profile.refresh_token = tokens.get("refresh_token") or self.profile.refresh_token
        lifetime = tokens.get("expires_in")
        self.profile.expires_at = time.time() + float(lifetime) if lifetime else None
        if self.profile_name is not None:
            profiles.store(self.profile_name, self.profile, make_default=False)

    # --- requests ---------------------------------------------------------------------------

    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on 429/503 and on a refused connection; POSTs only with an
        Idempotency-Key, or when the answer says nothing was done (429, 503)."""
        headers = kwargs.get("headers") or {}
        safe = method in ("GET", "HEAD", "PUT", "DELETE") or "Idempotency-Key" in headers
        attempt = 0
        while True:
            try:
                answer = self.http.request(method, url, **kwargs)
            except httpx.ConnectError as exc:
                if attempt >= self.retries:
                    raise CliError(f"cannot reach the gateway at {self.profile.url}: {exc}",
                                   Exit.unreachable) from exc
                self._sleep(min(2.0 ** attempt * 0.5, MAX_WAIT_SECONDS))
            except httpx.TimeoutException as exc:
                if not safe or attempt >= self.retries:
                    raise CliError(f"the gateway at {self.profile.url} did not answer in time",
                                   Exit.unreachable) from exc
                self._sleep(min(2.0 ** attempt, MAX_WAIT_SECONDS))
            except httpx.HTTPError as exc:
                raise CliError(f"cannot talk to the gateway at {self.profile.url}: {exc}",
                               Exit.unreachable) from exc
            else:
                if answer.status_code not in RETRIED_STATUSES or attempt >= self.retries:
                    return answer
                self._sleep(retry_after(answer, attempt))
            attempt += 1

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                **kwargs: Any) -> httpx.Response:
        """An authenticated request; the token renewed once on a 401; CliError on >= 400."""
        self._renew_if_expired()
        answer = self.send(method, path, headers=self._headers(headers), **kwargs)
        if answer.status_code == 401 and self.profile.refresh_token:
            self.renew()
            answer = self.send(method, path, headers=self._headers(headers), **kwargs)
        self.check(answer)
        return answer

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.request(method, path, **kwargs)
        return answer.json() if answer.content else None

    def check(self, answer: httpx.Response) -> None:
        if answer.status_code >= 400:
            raise CliError(problem_line(answer), exit_for(answer))

    @contextmanager
    def events(self, path: str, params: dict[str, Any]) -> Iterator[Iterator[tuple[str, Any]]]:
        """The server-sent events of `path`, as (event, decoded data); a stream silent for
        STREAM_IDLE_SECONDS just ends (the caller reopens it where it stopped)."""
        self._renew_if_expired()
        try:
            with self.http.stream("GET", path, params=params, timeout=httpx.Timeout(
                    60.0, read=STREAM_IDLE_SECONDS), headers=self._headers(
                    {"Accept": "text/event-stream"})) as answer:
                if answer.status_code >= 400:
                    answer.read()
                    self.check(answer)
                yield _sse(answer.iter_lines())
        except httpx.ReadTimeout:
            return
        except httpx.HTTPError as exc:
            raise CliError(f"the stream from {self.profile.url} broke: {exc}",
                           Exit.unreachable) from exc

    def close(self) -> None:
        self.http.close()


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    event, data = "", list[str]()
    for line in lines:
        if not line:
            if event and data:
                yield event, json.loads("\n".join(data))
            event, data = "", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def member_slug(client: Gateway, given: str | None) -> str:
    """The member named, else the caller's only one."""
    if given:
        return given
    slugs = [m["member_slug"] for m in client.call("GET", f"{API}/me")["memberships"]]
    if len(slugs) != 1:
        raise CliError(f"name the member with --member (yours: {', '.join(slugs) or 'none'})",
                       Exit.usage)
    return str(slugs[0])


@contextmanager
def gateway(profile_name: str | None) -> Iterator[Gateway]:
    client = Gateway.open(profile_name)
    try:
        yield client
    finally:
        client.close()
