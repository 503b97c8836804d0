"""The gateway's own sentences in a job's `detail` and its events' (why a job waits, how it was
found, why it failed before running). They are stored in English, as the API answers them; the
web interface finds which one a stored text is (`sentence`) and says it in the viewer's language,
its values (Slurm's ids and messages, a date) as stored. Slurm's and SSH's own words pass
through as they are."""

from __future__ import annotations

import re
from collections.abc import Mapping

from consortium.texts import Sentence, one_after_another, translatable

SUBMITTED = translatable("slurm id %(id)s")
FOUND_BY_MARKER = translatable("found by its marker: slurm id %(id)s")
INTERRUPTED = translatable("submission interrupted")
CANCELLED_UNSENT = translatable("cancelled before it was submitted")
FORWARDED = translatable("the cluster answers again: forwarded")
UNAVAILABLE = translatable("cluster unavailable: %(reason)s")
MAINTENANCE = translatable("maintenance window until %(end)s: %(reason)s")
NEVER_SENT = translatable("the gateway stopped before submitting it")
NEVER_RECEIVED = translatable("the cluster never received it (no job carries its marker)")
UNACCOUNTED = translatable("ended as %(state)s with no accounting record")
VANISHED = translatable("vanished from the cluster's queue and accounting")
# a job the tracker cancelled for being held wider than priced (gateway.jobs.widening): what
# Slurm held more of, `cpus 4 > 1, time limit 30 min > 5 min`
WIDENED = translatable("Slurm held more than the gateway priced: %(excess)s; cancelled")
# an array's end: how many of its tasks ended in each state, `tasks: 3 completed, 1 failed`
TASKS = translatable("tasks: %(counts)s")
WIDENED_TASKS = translatable("%(widened)s (%(tasks)s)")  # a widened array's end
_TASK_COUNTS = {
    "pending": translatable("%(count)s pending"),
    "running": translatable("%(count)s running"),
    "completed": translatable("%(count)s completed"),
    "failed": translatable("%(count)s failed"),
    "cancelled": translatable("%(count)s cancelled"),
    "timeout": translatable("%(count)s timeout"),
    "out_of_memory": translatable("%(count)s out_of_memory"),
    "node_fail": translatable("%(count)s node_fail"),
    "unknown": translatable("%(count)s unknown"),
}
_LISTED = translatable("%(before)s, %(after)s")
_COUNT = re.compile(r"(?P<count>[0-9]+) (?P<state>\w+)")

_PLACEHOLDER = re.compile(r"%\\\((\w+)\\\)s")  # `%(name)s` once re.escape'd


def _reader(message: str) -> re.Pattern[str]:
    # each value as short as the rest allows: `until %(end)s: %(reason)s` splits at the first
    # `: `, as a reason may hold more
    return re.compile(_PLACEHOLDER.sub(r"(?P<\1>.+?)", re.escape(message)), re.DOTALL)


_READERS = {message: _reader(message) for message in (
    SUBMITTED, FOUND_BY_MARKER, INTERRUPTED, CANCELLED_UNSENT, FORWARDED, UNAVAILABLE,
    MAINTENANCE, NEVER_SENT, NEVER_RECEIVED, UNACCOUNTED, VANISHED, WIDENED, TASKS,
    WIDENED_TASKS)}


def widened(excess: list[str]) -> str:
    return WIDENED % {"excess": ", ".join(excess)}


def is_widened(detail: str | None) -> bool:
    """Whether a job's detail says the tracker cancelled it for being held wider (alone, or
    with its tasks' count once it ended)."""
    return detail is not None and _READERS[WIDENED].match(detail) is not None


def tasks_ended(counts: Mapping[str, int], detail: str | None) -> str:
    """An array's detail at its end: its tasks counted by state, after why it was cancelled
    if it was held wider than priced."""
    tasks = TASKS % {"counts": ", ".join(f"{n} {state}" for state, n in counts.items())}
    if is_widened(detail):
        return WIDENED_TASKS % {"widened": detail, "tasks": tasks}
    return tasks


def sentence(text: str) -> str:
    """A stored detail as the Sentence it was written from, or as it is."""
    for message, reader in _READERS.items():
        found = reader.fullmatch(text)
        if found is None:
            continue
        values: dict[str, str] = found.groupdict()
        if message == TASKS:
            return _tasks(values["counts"]) or text
        if message == WIDENED_TASKS:
            said = sentence(values["widened"]), sentence(values["tasks"])
            if [getattr(s, "message", None) for s in said] != [WIDENED, TASKS]:
                continue
            return Sentence(message, widened=said[0], tasks=said[1])
        return Sentence(message, **values)
    return text


def _tasks(counts: str) -> Sentence | None:
    """`3 completed, 1 failed` as the sentences of each state, or None for a state this
    module does not word."""
    parts: list[str] = []
    for part in counts.split(", "):
        found = _COUNT.fullmatch(part)
        if found is None or found["state"] not in _TASK_COUNTS:
            return None
        parts.append(Sentence(_TASK_COUNTS[found["state"]], count=found["count"]))
    return Sentence(TASKS, counts=one_after_another(parts, _LISTED))
