"""Slurm's pending reason codes (squeue %r) as sentences a researcher understands. The API
answers them in English; the web interface translates them (its catalogues extract the
`translatable` sentences of this module)."""

from __future__ import annotations

import re

from consortium.texts import Sentence, translatable

REASONS: dict[str, str] = {
    "None": translatable("The job is waiting to be scheduled."),
    "Resources": translatable("The job is waiting for the resources it asked for to become free."),
    "Priority": translatable("Jobs with a higher priority are ahead of this one in the queue."),
    "Dependency": translatable("The job is waiting for the jobs it depends on to finish."),
    "DependencyNeverSatisfied": translatable(
        "The job depends on a job that failed or was cancelled: it will never start; "
        "cancel it."),
    "BeginTime": translatable("The job asked not to start before a given time."),
    "JobHeldUser": translatable("The job is held by its owner; release it to let it start."),
    "JobHeldAdmin": translatable("The job is held by an administrator."),
    "ReqNodeNotAvail": translatable(
        "A node the job needs is unavailable (down, drained or reserved for maintenance)."),
    "PartitionTimeLimit": translatable("The job's time limit is longer than its partition allows."),
    "PartitionNodeLimit": translatable("The job asks for more nodes than its partition allows."),
    "PartitionDown": translatable("The job's partition is down."),
    "PartitionInactive": translatable("The job's partition is not accepting jobs right now."),
    "NodeDown": translatable("A node the job needs is down."),
    "Reservation": translatable("The job is waiting for its reservation to start."),
    "InvalidAccount": translatable("The job's account is invalid; the job cannot start."),
    "InvalidQOS": translatable("The job's QOS is invalid; the job cannot start."),
    "QOSMaxJobsPerUserLimit": translatable(
        "The account already runs as many jobs as its QOS allows; the job starts when one "
        "of them ends."),
    "QOSMaxSubmitJobPerUserLimit": translatable(
        "The account has as many jobs queued as its QOS allows."),
    "QOSGrpCpuLimit": translatable(
        "The QOS's CPUs are all in use; the job waits for some to be freed."),
    "QOSGrpGRES": translatable(
        "The QOS's GPUs are all in use; the job waits for some to be freed."),
    "AssocMaxJobsLimit": translatable(
        "The member's account already runs as many jobs as it may; the job starts when one "
        "of them ends."),
    "AssocGrpJobsLimit": translatable(
        "The member's account already runs as many jobs as it may; the job starts when one "
        "of them ends."),
    "AssocGrpBillingMinutes": translatable(
        "The member's allocation on the cluster is used up: the job waits until more hours "
        "are granted."),
    "AssocGrpCPUMinutesLimit": translatable(
        "The member's CPU-minutes limit on the cluster is reached: the job waits until more "
        "hours are granted."),
    "AssocGrpCpuLimit": translatable(
        "The member's account already uses as many CPUs as it may at once; the job waits."),
    "AssocGrpGRES": translatable(
        "The member's account already uses as many GPUs as it may at once; the job waits."),
    "AssocGrpSubmitJobsLimit": translatable(
        "The member's account has as many jobs queued as it may."),
    "launch failed requeued held": translatable(
        "The job failed to launch and was put back on hold."),
}

# Slurm's families of limit reasons: <scope>Grp<TRES>... / <scope>Max<TRES>...
_LIMIT = re.compile(r"^(Assoc|QOS)(Grp|Max)(\w+?)(Minutes|RunMinutes)?(Limit)?$")
# by scope, then by whether the limit is on usage over time (TRES-minutes)
_LIMITS: dict[tuple[str, bool], str] = {
    ("Assoc", True): translatable(
        "A %(what)s usage limit of the member's account is reached: the job waits until more "
        "is allowed."),
    ("Assoc", False): translatable(
        "A %(what)s limit of the member's account is reached: the job waits until it is no "
        "longer."),
    ("QOS", True): translatable(
        "A %(what)s usage limit of its QOS is reached: the job waits until more is allowed."),
    ("QOS", False): translatable(
        "A %(what)s limit of its QOS is reached: the job waits until it is no longer."),
}
_UNKNOWN = translatable("The job is waiting (Slurm's reason: %(code)s).")


def explain(code: str | None) -> str | None:
    """The sentence for a reason code (a Sentence: English, and the pages translate it); a
    generic one for a code the table does not know."""
    if not code:
        return None
    if code in REASONS:
        return Sentence(REASONS[code])
    match = _LIMIT.match(code)
    if match:
        return Sentence(_LIMITS[match.group(1), bool(match.group(4))], what=match.group(3))
    return Sentence(_UNKNOWN, code=code)
