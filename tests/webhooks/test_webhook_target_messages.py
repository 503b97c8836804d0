"""A refused webhook host name gets one message whether it does not resolve or resolves to an
address that is not public: the answers must not map the internal DNS for the caller."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from jobs_helpers import World

from consortium.models import User
from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings
from gateway.webhooks import targets
from gateway.webhooks.config import WebhookSettings
from gateway.webhooks.service import check_target

STRICT = targets.TargetPolicy.of(WebhookSettings())
# what the fake resolver answers, by name; a name it does not know does not resolve
ADDRESSES = {"intranet.example.org": ["10.1.2.3"], "mixed.example.org": ["93.184.215.14",
                                                                          "192.168.0.9"]}


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        if host not in ADDRESSES:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in ADDRESSES[host]]
    monkeypatch.setattr(targets.anyio, "getaddrinfo", getaddrinfo)


def _without(answer: Any, host: str) -> tuple[int, str]:
    """Status and problem body, with what differs per request and the host name taken out."""
    body = {k: v for k, v in answer.json().items() if k not in ("instance", "request_id")}
    return answer.status_code, json.dumps(body, sort_keys=True).replace(host, "HOST")


@pytest.mark.usefixtures("fake_dns")
def test_an_unresolvable_name_and_a_private_one_get_the_same_refusal(
        *, strict_settings: Settings, database: Database, world: World,
        as_: Callable[[User], dict[str, str]]) -> None:
    client = TestClient(create_app(strict_settings, database=database))
    path = f"/api/v1/members/{world.acme.slug}/projects/{world.project.slug}/webhooks"
    hosts = ("intranet.example.org", "mixed.example.org", "nowhere.example.org")
    answers = {_without(client.post(path, headers=as_(world.manager), json={
        "url": f"http://{host}/hook", "events": ["job.state_changed"]}), host) for host in hosts}
    [(status, body)] = answers
    assert status == 422
    assert "does not resolve to public addresses only" in body


def test_no_address_at_all_reads_as_a_private_one() -> None:
    destination = targets.parse("http://intranet.example.org/hook")
    refusals = []
    for addresses in ([], ["10.0.0.1"], ["fe80::1"]):
        with pytest.raises(targets.TargetRefused) as refused:
            targets.check(destination, addresses, STRICT)
        refusals.append(refused.value.detail)
    assert refusals == [targets.not_public("intranet.example.org")] * 3


def test_an_address_given_literally_still_says_why() -> None:
    with pytest.raises(targets.TargetRefused, match=r"not a public address \(loopback\)"):
        targets.check(targets.parse("http://127.0.0.1/hook"), ["127.0.0.1"], STRICT)


def test_a_lookup_that_times_out_reads_as_any_other_refused_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def hangs(*_: Any, **__: Any) -> list[tuple[Any, ...]]:
        await anyio.sleep(60)
        return []
    monkeypatch.setattr(targets.anyio, "getaddrinfo", hangs)
    config = WebhookSettings(timeout_seconds=0.05)
    with pytest.raises(targets.TargetRefused) as refused:
        anyio.run(check_target, "http://slow.example.org/hook", config)
    assert refused.value.detail == targets.not_public("slow.example.org")
