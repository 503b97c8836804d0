"""Login throttling per account and per client address, in the database (shared by replicas).

Every attempt is counted when it starts, before the password is checked, so a burst of
parallel guesses cannot slip through between a check and its failure being recorded; a
successful login gives its count back (and clears the account's counter). Reaching the limit
blocks the key for `base_block_seconds`, doubling at each further attempt up to
`max_block_seconds`: a block always ends, so nobody can be locked out for good. The counter
resets after `window_seconds` without attempts (counted from the end of the last block).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from consortium.errors import Throttled
from consortium.models import LoginThrottle

# The key column holds "account:" + an email (at most 320 characters).
MAX_ACCOUNT_LENGTH = 320


class ThrottlePolicy(Protocol):
    """The numbers of gateway.settings.LoginThrottleSettings."""

    @property
    def window_seconds(self) -> int: ...
    @property
    def max_failures_per_account(self) -> int: ...
    @property
    def max_failures_per_address(self) -> int: ...
    @property
    def base_block_seconds(self) -> int: ...
    @property
    def max_block_seconds(self) -> int: ...


def account_key(email: str) -> str:
    return f"account:{email.strip().lower()[:MAX_ACCOUNT_LENGTH]}"


def address_key(address: str) -> str:
    return f"addr:{address}"


def _limits(policy: ThrottlePolicy, email: str, address: str | None) -> dict[str, int]:
    limits = {account_key(email): policy.max_failures_per_account}
    if address:
        limits[address_key(address)] = policy.max_failures_per_address
    return limits


def block_seconds(policy: ThrottlePolicy, over_limit: int) -> int:
    """Exponential backoff: the base block, doubled for each attempt past the limit, capped."""
    return min(policy.base_block_seconds << min(over_limit, 32), policy.max_block_seconds)


def _lock_rows(session: Session, keys: list[str], now: datetime) -> dict[str, LoginThrottle]:
    """The keys' rows, created if missing and locked (FOR UPDATE; SQLite writers hold the lock)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(LoginThrottle)
        .values([{"key": key, "failures": 0, "window_started_at": now} for key in keys])
        .on_conflict_do_nothing(index_elements=["key"])
    )
    rows = session.scalars(
        select(LoginThrottle)
        .where(LoginThrottle.key.in_(keys))
        .order_by(LoginThrottle.key)  # one lock order for every replica: no deadlock
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.key: row for row in rows}


def begin_attempt(
    session: Session, policy: ThrottlePolicy, *, email: str, address: str | None, now: datetime
) -> None:
    """Count a login attempt; Throttled (with the seconds to wait) if a key is blocked.

    A refused attempt changes nothing (the caller's transaction rolls back).
    """
    limits = _limits(policy, email, address)
    rows = _lock_rows(session, sorted(limits), now)
    blocked_until = max(
        (r.blocked_until for r in rows.values() if r.blocked_until and r.blocked_until > now),
        default=None,
    )
    if blocked_until is not None:
        retry_after = max(1, math.ceil((blocked_until - now).total_seconds()))
        raise Throttled("too many failed logins; retry later", retry_after=retry_after)
    window = timedelta(seconds=policy.window_seconds)
    for key, row in rows.items():
        if now >= row.window_started_at + window:
            row.failures, row.window_started_at, row.blocked_until = 0, now, None
        row.failures += 1
        if row.failures >= limits[key]:
            row.blocked_until = now + timedelta(
                seconds=block_seconds(policy, row.failures - limits[key])
            )
            # the quiet period that resets the counter starts when the block ends, so an
            # attacker who resumes right after a block meets a longer one
            row.window_started_at = row.blocked_until
    session.flush()


def attempt_succeeded(
    session: Session, policy: ThrottlePolicy, *, email: str, address: str | None, now: datetime
) -> None:
    """A login succeeded: the account starts afresh, the address gets this attempt back."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == account_key(email)))
    if not address:
        return
    row = _lock_rows(session, [address_key(address)], now)[address_key(address)]
    row.failures = max(0, row.failures - 1)
    if row.failures < policy.max_failures_per_address and row.blocked_until is not None:
        # the block was this very attempt's, which turned out to be legitimate
        row.blocked_until = None
        row.window_started_at = min(row.window_started_at, now)
    session.flush()


def prune(session: Session, policy: ThrottlePolicy, now: datetime) -> int:
    """Delete counters whose window is over (they would reset anyway).

    A block never outlasts its row's window: blocking moves the window's start to its end.
    """
    cutoff = now - timedelta(seconds=policy.window_seconds)
    result = session.execute(delete(LoginThrottle).where(LoginThrottle.window_started_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
