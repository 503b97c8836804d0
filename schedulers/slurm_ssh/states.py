"""Slurm's job states (squeue %T, sacct State) onto ours.

Choices, where Slurm's state is not one of ours:
- COMPLETING, CONFIGURING, SIGNALING, STAGE_OUT, RESIZING, POWER_UP_NODE: running (the job
  holds its allocation; billing counts).
- SUSPENDED, STOPPED: running (the allocation is kept and the job resumes; Slurm stops its
  elapsed time meanwhile, so nothing is over-charged).
- REQUEUED, REQUEUE_FED, REQUEUE_HOLD, RESV_DEL_HOLD: pending (it will be scheduled again).
- PREEMPTED: cancelled (Slurm ended it for another job; what ran is charged like a cancel).
  With PreemptMode=REQUEUE the job shows REQUEUED instead and stays pending.
- BOOT_FAIL, NODE_FAIL, LAUNCH_FAILED: node_fail (refunded: not the member's fault).
- DEADLINE: timeout. SPECIAL_EXIT, RECONFIG_FAIL: failed. REVOKED (federation): cancelled.
- A state missing from this table is taken as running: Slurm's base states have been the same
  twelve for a decade and new names have only been flags of live jobs, so the tracker keeps
  polling and settles on sacct's final state.
"""

from __future__ import annotations

from schedulers.models import JobState

_STATES: dict[str, JobState] = {
    "PENDING": JobState.pending,
    "REQUEUED": JobState.pending,
    "REQUEUE_FED": JobState.pending,
    "REQUEUE_HOLD": JobState.pending,
    "RESV_DEL_HOLD": JobState.pending,
    "RUNNING": JobState.running,
    "COMPLETING": JobState.running,
    "CONFIGURING": JobState.running,
    "SIGNALING": JobState.running,
    "STAGE_OUT": JobState.running,
    "RESIZING": JobState.running,
    "POWER_UP_NODE": JobState.running,
    "SUSPENDED": JobState.running,
    "STOPPED": JobState.running,
    "COMPLETED": JobState.completed,
    "FAILED": JobState.failed,
    "SPECIAL_EXIT": JobState.failed,
    "RECONFIG_FAIL": JobState.failed,
    "CANCELLED": JobState.cancelled,
    "PREEMPTED": JobState.cancelled,
    "REVOKED": JobState.cancelled,
    "TIMEOUT": JobState.timeout,
    "DEADLINE": JobState.timeout,
    "OUT_OF_MEMORY": JobState.out_of_memory,
    "BOOT_FAIL": JobState.node_fail,
    "NODE_FAIL": JobState.node_fail,
    "LAUNCH_FAILED": JobState.node_fail,
}


def job_state(raw: str) -> JobState:
    """`raw` as Slurm prints it: "RUNNING", "CANCELLED by 0", "CANCELLED+"."""
    words = raw.split()
    word = words[0].rstrip("+") if words else ""
    return _STATES.get(word.upper(), JobState.running)
