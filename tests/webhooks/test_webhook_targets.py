"""SSRF: a webhook URL whose host is not a public address is refused with 422, when the
subscription is made, unless the configuration allows it. No test here sends any traffic
(names used resolve locally: numeric forms and `localhost`)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address

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

Headers = Callable[[User], dict[str, str]]
STRICT = targets.TargetPolicy.of(WebhookSettings())


def hooks_path(world: World) -> str:
    return f"/api/v1/members/{world.acme.slug}/projects/{world.project.slug}/webhooks"


@pytest.fixture
def strict_client(strict_settings: Settings, database: Database) -> TestClient:
    return TestClient(create_app(strict_settings, database=database))


# the addresses an attacker tries first (OWASP API7), through the API
REFUSED_BY_THE_API = [
    "http://127.0.0.1/hook",
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://localhost:8080/hook",
    "ftp://example.org/hook",
    "http://user:password@example.org/hook",
]


def test_non_public_targets_and_bad_urls_are_refused_by_the_api_with_422(
        *, strict_client: TestClient, world: World, as_: Headers) -> None:
    for url in REFUSED_BY_THE_API:
        answer = strict_client.post(hooks_path(world), headers=as_(world.manager),
                                    json={"url": url, "events": ["job.state_changed"]})
        assert answer.status_code == 422, (url, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", url
        assert answer.json()["errors"][0]["loc"] == ["body", "url"], url
    listed = strict_client.get(hooks_path(world), headers=as_(world.manager))
    assert listed.json() == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook",
    "http://192.168.1.10/hook",
    "http://172.16.5.4/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://100.64.0.1/hook",
    "http://224.0.0.1/hook",
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://127.1/hook",  # what inet_aton makes of it: 127.0.0.1
    "http://2130706433/hook",  # 127.0.0.1 as one number
    "http://0x7f.0.0.1/hook",
])
def test_a_name_or_address_that_is_not_public_is_refused(url: str) -> None:
    with pytest.raises(targets.TargetRefused):
        anyio.run(targets.resolve, url, STRICT)


@pytest.mark.parametrize("url", [
    "file:///etc/passwd",
    "gopher://example.org/",
    "http://user@example.org/hook",
    "http://example.org/hook#part",
    "http:///hook",
    "http://exa mple.org/",
    "http://127.0.0.1\\@example.org/",
    "http://exa%6dple.org/",
])
def test_a_malformed_or_credentialed_url_is_refused_before_any_lookup(url: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        targets.parse(url)


def test_loopback_is_accepted_when_the_configuration_names_it(
        *, client: TestClient, world: World, as_: Headers) -> None:
    answer = client.post(hooks_path(world), headers=as_(world.manager),
                         json={"url": "http://127.0.0.1:9/hook", "events": ["quota.threshold"]})
    assert answer.status_code == 201, answer.text


def test_allowing_private_targets_lets_any_address_through_but_not_a_bad_scheme(
        *, settings: Settings, database: Database, world: World, as_: Headers) -> None:
    relaxed = settings.model_copy(update={"webhooks": WebhookSettings(
        worker_in_serve=False, allow_private_targets=True)})
    client = TestClient(create_app(relaxed, database=database))
    ok = client.post(hooks_path(world), headers=as_(world.manager),
                     json={"url": "http://10.1.2.3/hook", "events": ["job.state_changed"]})
    assert ok.status_code == 201, ok.text
    bad = client.post(hooks_path(world), headers=as_(world.manager),
                      json={"url": "file:///etc/passwd", "events": ["job.state_changed"]})
    assert bad.status_code == 422


@pytest.mark.parametrize(("address", "refused"), [
    ("8.8.8.8", False),
    ("2001:4860:4860::8888", False),
    ("127.0.0.1", True),
    ("10.0.0.1", True),
    ("169.254.169.254", True),
    ("100.64.0.1", True),  # shared (carrier-grade NAT)
    ("239.1.1.1", True),  # multicast, which Python counts as global
    ("ff02::1", True),
    ("fec0::1", True),  # site-local
    ("fd12:3456::1", True),  # unique local
    ("2002:7f00:1::", True),  # 6to4 around 127.0.0.1
    ("64:ff9b::a00:1", True),  # NAT64 around 10.0.0.1
    ("::ffff:10.0.0.1", True),
    ("::", True),
])
def test_each_kind_of_non_public_address_is_named_and_public_ones_pass(
        address: str, refused: bool) -> None:
    assert (targets.refusal(ip_address(address)) is not None) is refused


def test_every_address_of_a_name_must_be_public_and_the_first_is_the_one_used() -> None:
    destination = targets.parse("https://hooks.example.org/in")
    with pytest.raises(targets.TargetRefused):
        targets.check(destination, ["93.184.215.14", "10.0.0.7"], STRICT)
    target = targets.check(destination, ["93.184.215.14", "2606:2800::1"], STRICT)
    assert target.address == "93.184.215.14"
    assert str(target.pinned_url()) == "https://93.184.215.14/in"


def test_an_allowed_network_admits_its_addresses_only() -> None:
    policy = targets.TargetPolicy.of(WebhookSettings(allowed_hosts=["10.20.0.0/16"]))
    destination = targets.parse("http://hooks.internal.test/in")
    assert targets.check(destination, ["10.20.3.4"], policy).address == "10.20.3.4"
    with pytest.raises(targets.TargetRefused):
        targets.check(destination, ["10.21.0.1"], policy)


def test_a_refusal_of_a_name_does_not_reveal_where_it_points() -> None:
    with pytest.raises(targets.TargetRefused) as refused:
        targets.check(targets.parse("http://intranet.example.org/"), ["10.9.8.7"], STRICT)
    assert "10.9.8.7" not in refused.value.detail
