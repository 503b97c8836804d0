"""Slurm's pending reason codes (squeue %r) as sentences a researcher understands."""

from __future__ import annotations

import re

REASONS: dict[str, str] = {
    "None": "The job is waiting to be scheduled.",
    "Resources": "The job is waiting for the resources it asked for to become free.",
    "Priority": "Jobs with a higher priority are ahead of this one in the queue.",
    "Dependency": "The job is waiting for the jobs it depends on to finish.",
    "DependencyNeverSatisfied": (
        "The job depends on a job that failed or was cancelled: it will never start; "
        "cancel it."),
    "BeginTime": "The job asked not to start before a given time.",
    "JobHeldUser": "The job is held by its owner; release it to let it start.",
    "JobHeldAdmin": "The job is held by an administrator.",
    "ReqNodeNotAvail": (
        "A node the job needs is unavailable (down, drained or reserved for maintenance)."),
    "PartitionTimeLimit": "The job's time limit is longer than its partition allows.",
    "PartitionNodeLimit": "The job asks for more nodes than its partition allows.",
    "PartitionDown": "The job's partition is down.",
    "PartitionInactive": "The job's partition is not accepting jobs right now.",
    "NodeDown": "A node the job needs is down.",
    "Reservation": "The job is waiting for its reservation to start.",
    "InvalidAccount": "The job's account is invalid; the job cannot start.",
    "InvalidQOS": "The job's QOS is invalid; the job cannot start.",
    "QOSMaxJobsPerUserLimit": (
        "The account already runs as many jobs as its QOS allows; the job starts when one "
        "of them ends."),
    "QOSMaxSubmitJobPerUserLimit": "The account has as many jobs queued as its QOS allows.",
    "QOSGrpCpuLimit": "The QOS's CPUs are all in use; the job waits for some to be freed.",
    "QOSGrpGRES": "The QOS's GPUs are all in use; the job waits for some to be freed.",
    "AssocMaxJobsLimit": (
        "The member's account already runs as many jobs as it may; the job starts when one "
        "of them ends."),
    "AssocGrpJobsLimit": (
        "The member's account already runs as many jobs as it may; the job starts when one "
        "of them ends."),
    "AssocGrpBillingMinutes": (
        "The member's allocation on the cluster is used up: the job waits until more hours "
        "are granted."),
    "AssocGrpCPUMinutesLimit": (
        "The member's CPU-minutes limit on the cluster is reached: the job waits until more "
        "hours are granted."),
    "AssocGrpCpuLimit": (
        "The member's account already uses as many CPUs as it may at once; the job waits."),
    "AssocGrpGRES": (
        "The member's account already uses as many GPUs as it may at once; the job waits."),
    "AssocGrpSubmitJobsLimit": "The member's account has as many jobs queued as it may.",
    "launch failed requeued held": "The job failed to launch and was put back on hold.",
}

# Slurm's families of limit reasons: <scope>Grp<TRES>... / <scope>Max<TRES>...
_LIMIT = re.compile(r"^(Assoc|QOS)(Grp|Max)(\w+?)(Minutes|RunMinutes)?(Limit)?$")


def explain(code: str | None) -> str | None:
    """The sentence for a reason code; a generic one for a code the table does not know."""
    if not code:
        return None
    if code in REASONS:
        return REASONS[code]
    match = _LIMIT.match(code)
    if match:
        scope = "the member's account" if match.group(1) == "Assoc" else "its QOS"
        what = match.group(3)
        if match.group(4):
            return (f"A {what} usage limit of {scope} is reached: the job waits until "
                    "more is allowed.")
        return f"A {what} limit of {scope} is reached: the job waits until it is no longer."
    return f"The job is waiting (Slurm's reason: {code})."
