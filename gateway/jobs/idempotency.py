"""Idempotency-Key for submissions (IETF draft-ietf-httpapi-idempotency-key-header).

Per user and key: the first request claims the key (in flight), then stores its response;
a retry with the same body gets that response again, whatever happened since; the same key
with another body is refused (422); a retry while the first is still running gets 409.

Only answers for which something was done are kept: a job on the cluster (201), or one whose
submission is in doubt (202, settled by marker). A refusal for which nothing was executed (the
cluster unreachable, quota, a policy, Slurm's own refusal) frees the key: the retry that its
503's Retry-After invites is processed anew, instead of replaying the 503 for the key's life.

A request that died while holding a key leaves it in flight. After `in_flight_timeout` the key
is taken over when nothing reached the cluster under it (no job, or a job that failed to
submit), or answered with the job it created (202: the caller learns the job and its state,
never a second submission).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.jobs.errors import IdempotencyKeyInFlight, IdempotencyKeyReused
from gateway.jobs.models import IdempotencyRecord, IdempotencyState, Job, JobState

KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, no spaces
IN_FLIGHT_RETRY_AFTER = 2


def fingerprint(method: str, path: str, body: Any) -> str:
    """SHA-256 of the request as parsed: key order and whitespace do not make it different."""
    canonical = json.dumps({"method": method, "path": path, "body": body}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Claimed:
    """The caller owns the key: it must `attach_job`, then `complete` (or `abandon`)."""

    record_id: int


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Orphaned:
    """The request that held the key died after creating this job."""

    record_id: int
    job_id: int


def claim(session: Session, *, user_id: int, key: str, fingerprint: str, now: datetime,
          ttl: timedelta, in_flight_timeout: timedelta) -> Claimed | Replay | Orphaned:
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
    found = session.scalars(
        select(IdempotencyRecord)
        .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
        .with_for_update()).first()
    if found is None:
        try:
            with session.begin_nested():
                new = IdempotencyRecord(user_id=user_id, key=key, fingerprint=fingerprint,
                                        state=IdempotencyState.in_flight, created_at=now,
                                        expires_at=now + ttl)
                session.add(new)
                session.flush()
        except IntegrityError:  # another request inserted it first and is still running
            raise _in_flight() from None
        return Claimed(new.id)
    if found.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used for a different request; use a new key")
    if found.state == IdempotencyState.done:
        status = found.response_status or 200
        if status < 400:
            return Replay(status, found.response_body or {})
        return _take_over(session, found, now, ttl)  # a refusal kept by an earlier version
    if found.created_at + in_flight_timeout > now:
        raise _in_flight()
    job_id = _job_that_may_have_run(session, found)
    if job_id is None:  # nothing of the dead request reached the cluster
        return _take_over(session, found, now, ttl)
    return Orphaned(found.id, job_id)


def _take_over(session: Session, found: IdempotencyRecord, now: datetime,
               ttl: timedelta) -> Claimed:
    found.state = IdempotencyState.in_flight
    found.job_id = found.response_status = found.response_body = None
    found.created_at = now
    found.expires_at = now + ttl
    session.flush()
    return Claimed(found.id)


def _job_that_may_have_run(session: Session, record: IdempotencyRecord) -> int | None:
    """The key's job unless there is none or it never reached the cluster (`submit_failed`)."""
    if record.job_id is None or session.scalar(
            select(Job.state).where(Job.id == record.job_id)) == JobState.submit_failed:
        return None
    return record.job_id


def _in_flight() -> IdempotencyKeyInFlight:
    return IdempotencyKeyInFlight(
        "a request with this Idempotency-Key is still being processed; retry shortly",
        retry_after=IN_FLIGHT_RETRY_AFTER)


def attach_job(session: Session, record_id: int, job_id: int) -> None:
    """In the transaction that creates the job: the key and the job land together."""
    found = session.get(IdempotencyRecord, record_id)
    if found is not None:
        found.job_id = job_id


def complete(session: Session, record_id: int, status: int, body: dict[str, Any]) -> None:
    found = session.get(IdempotencyRecord, record_id, with_for_update=True)
    if found is None or found.state == IdempotencyState.done:
        return
    found.state = IdempotencyState.done
    found.response_status = status
    found.response_body = body
    session.flush()


def release(session: Session, record_id: int) -> None:
    """Free a key whose request executed nothing (it failed before creating a job, or its job
    failed to submit), so that a retry is processed anew. A key whose job may be on the
    cluster stays in flight: a retry is then answered with that job."""
    found = session.get(IdempotencyRecord, record_id, with_for_update=True)
    if (found is not None and found.state == IdempotencyState.in_flight
            and _job_that_may_have_run(session, found) is None):
        session.delete(found)
        session.flush()
