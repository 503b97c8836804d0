"""The one way a job changes state: an event row in the same transaction, and the listeners
(webhooks, metrics) told inside that transaction, so what they record lands with the change
or not at all (a transactional outbox, not a fire-and-forget call).

Nothing here flushes: the event is written with the transaction's next flush, together with
whatever else it holds (a flush per event was a third of a submission's database time). A
listener that needs the event's id flushes for itself."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from consortium.base import utcnow
from gateway.jobs.models import Job, JobEvent, JobState

Listener = Callable[[Session, Job, JobEvent], None]
_listeners: list[Listener] = []

# `waiting` (gateway/jobs/waiting.py): entered before anything reached the cluster (accepted, or
# a submission that found it unreachable), left only to be sent, cancelled or failed
_INTO_WAITING = frozenset({JobState.accepted, JobState.submitting})
_OUT_OF_WAITING = frozenset({JobState.submitting, JobState.cancelled, JobState.submit_failed})


def on_state_change(listener: Listener) -> Listener:
    """Register a listener (usable as a decorator). It must only add rows to the session."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def _event(job: Job, **fields: object) -> JobEvent:
    # a job not flushed yet has no id: its events follow it by the relationship
    return JobEvent(job=job, **fields) if job.id is None else JobEvent(job_id=job.id, **fields)


def transition(session: Session, job: Job, to_state: JobState, *, detail: str | None = None,
               at: datetime | None = None) -> JobEvent:
    """Move `job` to `to_state` and record it. An ended job never changes again."""
    if job.state.terminal:
        raise ValueError(f"job {job.public_id} has ended ({job.state}); it cannot become "
                         f"{to_state}")
    if ((to_state == JobState.waiting and job.state not in _INTO_WAITING)
            or (job.state == JobState.waiting and to_state not in _OUT_OF_WAITING)):
        raise ValueError(f"job {job.public_id} cannot go from {job.state} to {to_state}")
    event = _event(job, at=at or utcnow(), from_state=job.state, to_state=to_state,
                   detail=detail)
    job.state = to_state
    session.add(event)
    for listener in list(_listeners):
        listener(session, job, event)
    return event


def first_event(session: Session, job: Job, *, at: datetime | None = None) -> JobEvent:
    """The event of a job's creation (no previous state)."""
    event = _event(job, at=at or job.created_at, from_state=None, to_state=job.state,
                   detail=None)
    session.add(event)
    for listener in list(_listeners):
        listener(session, job, event)
    return event
