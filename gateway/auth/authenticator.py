"""The one way to become a caller: a credential in, a Principal out (gateway.auth.principal
reads it), with the callers already read kept in memory.

Kept callers. A principal is kept under its credential's hash (the raw credential is never kept)
with the auth epoch it was read under. It is used again only while

- the database's auth epoch is still that one: every change to a row a principal is made of
  bumps the epoch, through the triggers named in EPOCH_TRIGGERS (installed by migration 0005;
  tests/auth/test_authenticator.py checks that the database holds exactly these and that each
  one ends a kept caller): a revoked or changed token, a disabled or demoted user, a new,
  changed or removed membership, a suspended member;
- it is younger than PRINCIPAL_LIFETIME (a change made behind the triggers' back still ends);
- its credential has not expired, and for a PAT its last use is not due to be stamped again
  (once a minute: see consortium.tokens).

Otherwise the caller is read again. The epoch is read on the event loop (gateway.loop_reads)
when it can be, so a kept caller costs one indexed read and no thread hop.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from cachetools import LRUCache
from sqlalchemy import select

from consortium.authz import Principal
from consortium.base import utcnow
from consortium.models import AuthEpoch
from consortium.tokens import token_hash
from gateway.auth.oidc import OidcVerifier
from gateway.auth.principal import read_principal
from gateway.db import Database
from gateway.loop_reads import LoopReadFailed, LoopReads
from gateway.settings import Settings

# table -> the statements on it that bump the auth epoch: what a principal is read from
EPOCH_TRIGGERS: Mapping[str, tuple[str, ...]] = {
    "access_tokens": ("UPDATE OF token_hash, user_id, member_id, scopes, expires_at, revoked_at",
                      "DELETE"),
    "users": ("UPDATE OF email, is_admin, is_active", "DELETE"),
    "memberships": ("INSERT", "UPDATE", "DELETE"),
    "members": ("UPDATE OF status", "DELETE"),
}
PRINCIPAL_LIFETIME = timedelta(seconds=60)
ENTRIES = 4096  # callers
EPOCH = select(AuthEpoch.value)


@dataclass(frozen=True)
class _Kept:
    principal: Principal
    epoch: int
    until: datetime


class Authenticator:
    """Credentials to principals for one app; shared by the event loop and worker threads.

    `caller` (async, on the event loop) is what routes and pages use; `principal` is the same
    answer for code already in a worker thread. Both raise consortium.errors.Unauthenticated
    for a credential that is not (or no longer) good."""

    def __init__(self, database: Database, settings: Settings, loop_reads: LoopReads,
                 oidc: OidcVerifier | None) -> None:
        self._database = database
        self._settings = settings
        self._loop_reads = loop_reads
        self._oidc = oidc
        self._lock = threading.Lock()
        self._kept: LRUCache[str, _Kept] = LRUCache(ENTRIES)
        # callers being read, by credential hash: the same credential asked meanwhile waits
        self._reading: dict[str, anyio.Event] = {}

    async def caller(self, credential: str) -> Principal:
        """The principal of `credential`: a kept one when current, else read in a worker
        thread (once for all who present the same credential at the same time: when a
        client's minute is up, all its connections miss together)."""
        key = token_hash(credential)
        while True:
            try:
                row = await self._loop_reads.first(EPOCH)
            except LoopReadFailed:
                row = None  # read the usual way
            kept = self._current(key, row[0]) if row else None
            if kept is not None:
                return kept
            reading = self._reading.get(key)
            if reading is None:
                break
            await reading.wait()
        reading = self._reading[key] = anyio.Event()
        try:
            return await anyio.to_thread.run_sync(self.principal, credential)
        finally:
            del self._reading[key]
            reading.set()

    def principal(self, credential: str) -> Principal:
        """The principal of `credential`, from a short read transaction of its own (blocking:
        for a worker thread)."""
        key = token_hash(credential)
        read_at = utcnow()
        with self._database.transaction(write=False) as session:
            epoch = session.scalars(EPOCH).one()  # first: the principal is no older than it
            kept = self._current(key, epoch)
            if kept is not None:
                return kept
            principal, good_until = read_principal(session, credential, self._settings,
                                                   self._oidc)
        until = read_at + PRINCIPAL_LIFETIME
        if good_until is not None:
            until = min(until, good_until)
        with self._lock:
            self._kept[key] = _Kept(principal, epoch, until)
        return principal

    def kept(self, credential: str, epoch: int) -> Principal | None:
        """The principal kept for `credential` if it is current at auth epoch `epoch` (for a
        caller that has just read the epoch with its own data)."""
        return self._current(token_hash(credential), epoch)

    def known(self, credential: str) -> bool:
        """Whether `credential` was good less than PRINCIPAL_LIFETIME ago, whatever the epoch
        says since. Enough to read its request's body, never to authorize anything."""
        with self._lock:
            kept = self._kept.get(token_hash(credential))
        return kept is not None and utcnow() < kept.until

    def _current(self, key: str, epoch: int) -> Principal | None:
        with self._lock:
            kept = self._kept.get(key)
        if kept is None or kept.epoch != epoch or utcnow() >= kept.until:
            return None
        return kept.principal
