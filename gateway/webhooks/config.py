"""Settings of the webhooks (`[webhooks]` in the TOML file, HPCGW_WEBHOOKS__* variables)."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the delivery worker: in `hpcgw serve` unless disabled, and in `hpcgw tracker`
    worker_in_serve: bool = True
    poll_seconds: float = Field(2.0, gt=0)
    batch_size: int = Field(50, ge=1, le=1000)
    concurrency: int = Field(8, ge=1, le=100)

    # targets: loopback, private, link-local... addresses are refused (SSRF) unless allowed
    allow_private_targets: bool = False
    # host names, addresses or networks (CIDR) a target may use even when not public
    allowed_hosts: list[str] = []

    # https targets' certificates are checked against the usual authorities (certifi) and
    # these (PEM): e.g. the internal authority of hosts named in allowed_hosts
    ca_file: Path | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(8, ge=1, le=30)
    # the n-th retry waits min(cap, base * 2**(n-1)), less up to a quarter at random
    backoff_base_seconds: float = Field(30.0, gt=0)
    backoff_cap_seconds: float = Field(6 * 3600.0, gt=0)
    # random bytes of a secret the server generates
    secret_bytes: int = Field(32, ge=16, le=128)
    max_per_project: int = Field(10, ge=1, le=100)
    # ended deliveries (delivered or failed) are kept this long in the log
    retention_days: int = Field(30, ge=1)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        out = []
        for host in hosts:
            entry = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
            if not entry:
                raise ValueError("an empty entry in allowed_hosts")
            if "/" in entry:
                ip_network(entry, strict=False)  # a bad network is an error at start-up
            out.append(entry)
        return out


class WebhooksConfig(Protocol):
    """What the webhooks read of the gateway's settings: `gateway.settings.Settings` is one.
    The settings hold this package's section; the package never imports the settings."""

    @property
    def webhooks(self) -> WebhookSettings: ...

    @property
    def secret_key(self) -> SecretStr: ...
