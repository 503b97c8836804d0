"""The gateways a researcher has logged in to: one profile each, in
`$XDG_CONFIG_HOME/hpcgw/profiles.json` (else `~/.config/hpcgw/`), mode 0600 in a 0700 directory,
since it holds refresh tokens. `HPCGW_URL` with `HPCGW_TOKEN` (a personal access token) stands
for a profile in scripts and CI, and is never written."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = "default"
FILE_NAME = "profiles.json"


class Kind(StrEnum):
    """How the profile's access token is renewed."""

    session = "session"  # the gateway's refresh grant (POST /api/v1/auth/token)
    oidc = "oidc"  # the provider's refresh grant at `token_endpoint`
    pat = "pat"  # a personal access token: never renewed


@dataclass
class Profile:
    url: str
    kind: Kind
    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None  # epoch seconds
    email: str | None = None
    token_endpoint: str | None = None  # oidc only
    client_id: str | None = None  # oidc only

    def expired(self, margin: float = 30.0) -> bool:
        return self.expires_at is not None and time.time() + margin >= self.expires_at


@dataclass
class Profiles:
    default: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hpcgw"


def config_file() -> Path:
    return config_dir() / FILE_NAME


def load() -> Profiles:
    path = config_file()
    if not path.exists():
        return Profiles()
    data: dict[str, Any] = json.loads(path.read_text())
    return Profiles(default=data.get("default"), profiles={
        name: Profile(**{**p, "kind": Kind(p["kind"])})
        for name, p in data.get("profiles", {}).items()})


def save(profiles: Profiles) -> Path:
    """Write the file whole, created 0600 before any secret is in it, then renamed over."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / FILE_NAME
    partial = directory / f".{FILE_NAME}.{os.getpid()}"
    data = {"default": profiles.default,
            "profiles": {n: asdict(p) for n, p in profiles.profiles.items()}}
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(data, out, indent=2)
    partial.replace(path)
    return path


@contextmanager
def locked() -> Iterator[None]:
    """Held while a refresh token is traded: two commands renewing at once would present it
    twice, and the gateway then revokes the whole login (a stolen token's signature)."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(directory / "profiles.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def selected(name: str | None) -> str:
    """The profile named, else $HPCGW_PROFILE, else the file's default, else `default`."""
    return name or os.environ.get("HPCGW_PROFILE") or load().default or DEFAULT_PROFILE


def store(name: str, profile: Profile, *, make_default: bool) -> Path:
    profiles = load()
    profiles.profiles[name] = profile
    if make_default or profiles.default is None:
        profiles.default = name
    return save(profiles)


def remove(name: str) -> Profile | None:
    profiles = load()
    gone = profiles.profiles.pop(name, None)
    if profiles.default == name:
        profiles.default = next(iter(profiles.profiles), None)
    save(profiles)
    return gone
