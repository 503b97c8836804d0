"""Whether a cluster is known to be unreachable, as this process last saw it.

A submission to a cluster whose controller is down waits for sbatch's own timeout (Slurm's
MessageTimeout and retries: about 10 s) before it fails. Once a call found the cluster
unreachable (a submission, or a tracker cycle), a submission first probes it (`scontrol ping`,
answered at once whether the controller is up or down) under a short timeout: still down, it
is refused at once; up again, it goes on. Any call that reaches the cluster clears the mark.

Kept per scheduler object: the app and the tracker of one process share their schedulers.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import anyio

from schedulers.base import Scheduler
from schedulers.errors import SchedulerError, SchedulerUnavailable

# scheduler -> what the latest failed call said
_down: WeakKeyDictionary[Scheduler, str] = WeakKeyDictionary()


def failed(scheduler: Scheduler, exc: SchedulerError) -> None:
    """Record a call that failed: only "cannot be reached, nothing ran" marks the cluster down
    (a lost answer or Slurm's refusal says the cluster is there)."""
    if isinstance(exc, SchedulerUnavailable) and not exc.maybe_executed:
        _down[scheduler] = exc.message


def reached(scheduler: Scheduler) -> None:
    """A call got an answer from the cluster."""
    _down.pop(scheduler, None)


def known_down(scheduler: Scheduler) -> str | None:
    """What the latest failed call said, while the cluster is known to be unreachable."""
    return _down.get(scheduler)


async def still_down(scheduler: Scheduler, probe_seconds: float) -> str | None:
    """Why the cluster cannot be reached, if it is known to be down and a probe of at most
    `probe_seconds` does not find it up again; None otherwise (not known down, or back)."""
    if known_down(scheduler) is None:
        return None
    detail = f"no answer to scontrol ping within {probe_seconds:g} s"
    with anyio.move_on_after(probe_seconds):
        found = await scheduler.health()
        if found.ok:
            reached(scheduler)
            return None
        detail = found.detail
    if scheduler not in _down:
        return None  # another call reached it meanwhile
    _down[scheduler] = detail
    return detail


async def probe(scheduler: Scheduler) -> str | None:
    """Ask the cluster now (the tracker, before it forwards waiting jobs): None when it
    answers (the mark cleared), else why not (the mark set, so submissions are told at once)."""
    found = await scheduler.health()
    if found.ok:
        reached(scheduler)
        return None
    _down[scheduler] = found.detail
    return found.detail
