"""Principals kept by their token's hash while what they were read from is unchanged.

A principal is made of rows (its token, user, memberships and members) whose every change bumps
the auth epoch (triggers of migration 0005). A kept principal is used only while the database's
epoch is still the one it was read under, for at most PRINCIPAL_LIFETIME and never past its
token's expiry; otherwise the caller is authenticated again. The raw token is never kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from cachetools import LRUCache
from sqlalchemy import select

from consortium.authz import Principal
from consortium.base import utcnow
from consortium.models import AuthEpoch

# At least this often a kept principal is authenticated again, whatever the epoch says: a PAT's
# last use is stamped once a minute, and a change made behind the triggers' back still ends.
PRINCIPAL_LIFETIME = timedelta(seconds=60)
ENTRIES = 4096  # callers
EPOCH = select(AuthEpoch.value)


@dataclass(frozen=True)
class _Credential:
    principal: Principal
    epoch: int
    until: datetime


class Credentials:
    """The kept principals of one app; shared by the event loop and worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: LRUCache[str, _Credential] = LRUCache(ENTRIES)

    def get(self, key: str, epoch: int) -> Principal | None:
        """The principal kept for the token hash `key`, if read under `epoch` and still young."""
        with self._lock:
            credential = self._kept.get(key)
        if credential is None or credential.epoch != epoch or utcnow() >= credential.until:
            return None
        return credential.principal

    def known(self, key: str) -> bool:
        """Whether a principal is kept for `key` and still young, whatever the epoch: its token
        was good less than PRINCIPAL_LIFETIME ago. Enough to read its request's body, never to
        authorize anything (that is get())."""
        with self._lock:
            credential = self._kept.get(key)
        return credential is not None and utcnow() < credential.until

    def put(self, key: str, principal: Principal, epoch: int, *, read_at: datetime) -> None:
        """Keep `principal`, authenticated at `read_at` in a transaction that read `epoch` first
        (so it is never labelled newer than what it was read from)."""
        until = read_at + PRINCIPAL_LIFETIME
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        with self._lock:
            self._kept[key] = _Credential(principal, epoch, until)
