"""Where a webhook may be sent (OWASP API7, SSRF).

An http(s) URL without credentials, whose host resolves only to public addresses: loopback,
private, link-local, multicast, reserved, unspecified, shared (CGNAT) and unique-local addresses
are refused, and so are IPv6 addresses that embed one (mapped, 6to4, Teredo, NAT64), unless the
configuration allows private targets or names the host, address or network.

The check runs when a subscription is made (a 422) and again before every attempt on a fresh
DNS answer; the attempt then connects to the very address it checked (see `Target.pinned_url`),
so a name that resolves to something else a moment later (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import anyio
import httpx

from consortium.errors import InvalidInput
from consortium.texts import translatable
from gateway.webhooks.config import WebhookSettings

SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 2000
_LABEL = r"[a-z0-9_][a-z0-9_-]{0,62}"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_NAT64 = ip_network("64:ff9b::/96")
_SHARED = ip_network("100.64.0.0/10")

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


class TargetRefused(InvalidInput):
    code = "webhook-target-refused"
    title = translatable("Webhook target refused")

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[{"loc": ["body", "url"], "msg": detail,
                                          "type": "webhook_target"}])


@dataclass(frozen=True)
class Destination:
    """A well-formed target URL (what `parse` accepts), not yet resolved."""

    url: httpx.URL
    host: str  # lower case, ASCII (IDNA), no brackets, no trailing dot
    port: int


def parse(url: str) -> Destination:
    """The URL's form only (no DNS): raises ValueError with the reason."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or c in "\\\x7f" for c in url):
        raise ValueError("spaces, control characters and backslashes are not allowed")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parsed.scheme not in SCHEMES:
        raise ValueError("only http and https URLs are allowed")
    if parsed.userinfo:
        raise ValueError("credentials in the URL are not allowed (the payload is signed)")
    if parsed.fragment:
        raise ValueError("a fragment is not sent to the server; remove it")
    if not host:
        raise ValueError("the URL has no host")
    if _literal(host) is None and not _HOSTNAME.fullmatch(host):
        raise ValueError(f"'{host}' is not a valid host name")
    return Destination(url=parsed, host=host,
                       port=parsed.port or (443 if parsed.scheme == "https" else 80))


def _literal(host: str) -> Address | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


def _embedded(address: Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and so may reach)."""
    if isinstance(address, IPv4Address):
        return []
    inner = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64:
        inner.append(IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in inner if a is not None]


def refusal(address: Address) -> str | None:
    """Why the address is not a public unicast one, or None when it is."""
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if isinstance(address, IPv6Address) and address.is_site_local:
        return "site-local"
    if isinstance(address, IPv4Address) and address in _SHARED:
        return "shared (carrier-grade NAT)"
    for inner in _embedded(address):
        if (why := refusal(inner)) is not None:
            return f"embeds a {why} IPv4 address"
    if not address.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class TargetPolicy:
    allow_private: bool
    hosts: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def of(cls, settings: WebhookSettings) -> TargetPolicy:
        networks: list[Network] = []
        hosts: set[str] = set()
        for entry in settings.allowed_hosts:
            literal = _literal(entry)
            if "/" in entry or literal is not None:
                networks.append(ip_network(entry, strict=False))
            else:
                hosts.add(entry)
        return cls(settings.allow_private_targets, frozenset(hosts), tuple(networks))

    def address_allowed(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class Target:
    """A destination and the address, checked, that an attempt connects to."""

    destination: Destination
    address: str

    def pinned_url(self) -> httpx.URL:
        """The URL with the checked address in place of the name: the request goes there, with
        the name in its Host header (and TLS's server name, see delivery.py)."""
        return self.destination.url.copy_with(host=self.address)


def check(destination: Destination, addresses: Iterable[str], policy: TargetPolicy) -> Target:
    """Every address the name resolves to must be allowed; the first is the one used."""
    found = list(dict.fromkeys(a.split("%", 1)[0] for a in addresses))
    if not found:
        raise TargetRefused(not_public(destination.host))
    literal = _literal(destination.host) is not None
    if not (policy.allow_private or destination.host in policy.hosts):
        for text in found:
            address = ip_address(text)
            why = refusal(address)
            if why is not None and not policy.address_allowed(address):
                raise TargetRefused(
                    f"'{destination.host}' is not a public address ({why})" if literal else
                    not_public(destination.host))
    return Target(destination, found[0])


def not_public(host: str) -> str:
    """The one refusal of a host name, whether it does not resolve or resolves to an address
    that is not public: telling them apart would map the internal DNS for the caller."""
    return f"'{host}' does not resolve to public addresses only"


def _addresses(infos: Iterable[tuple[Any, Any, Any, Any, tuple[Any, ...]]]) -> list[str]:
    return [str(info[4][0]) for info in infos]


async def resolve(url: str, policy: TargetPolicy) -> Target:
    """Check a URL on a fresh DNS answer, without blocking the event loop (the caller bounds
    it in time)."""
    try:
        destination = parse(url)
    except ValueError as exc:
        raise TargetRefused(str(exc)) from None
    try:
        infos = await anyio.getaddrinfo(destination.host, destination.port,
                                        type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise TargetRefused(not_public(destination.host)) from None
    return check(destination, _addresses(infos), policy)
