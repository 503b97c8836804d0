"""Job arrays: Slurm's `--array` spec (`0-15:2%4`, `1,3,5-7`), parsed once for the quote, the
hold, the member's job cap and the command line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from consortium.texts import Sentence
from gateway.jobs.directives import whole_number

# Slurm's default MaxArraySize is 1001 (task ids 0-1000); the gateway's bound is the same
MAX_TASK_ID = 1000
MAX_TASKS = 1001
_PART = re.compile(r"([0-9]{1,7})(?:-([0-9]{1,7})(?::([0-9]{1,7}))?)?")  # ASCII digits only


@dataclass(frozen=True)
class ArraySpec:
    """The task ids of an array and how many may run at once (None: as many as fit)."""

    task_ids: tuple[int, ...]
    max_running: int | None

    @property
    def tasks(self) -> int:
        return len(self.task_ids)

    def __str__(self) -> str:
        """The canonical spec sent to sbatch (ranges with steps, as parsed)."""
        return format_spec(self.task_ids, self.max_running)


def parse_array(spec: str) -> ArraySpec:
    """Parse `--array`'s value; ValueError names what is wrong."""
    text = spec.strip()
    ids_part, percent, limit = text.partition("%")
    max_running = None
    if percent:
        max_running = whole_number(limit)
        if max_running is None or not 1 <= max_running <= MAX_TASKS:
            raise ValueError(Sentence("%(spec)r: after %% comes the number of tasks that may "
                                      "run at once, 1 to %(most)s", spec=spec, most=MAX_TASKS))
    ids: set[int] = set()
    for part in ids_part.split(","):
        found = _PART.fullmatch(part.strip())
        if not found:
            raise ValueError(Sentence("%(spec)r: use task ids, ranges and steps like "
                                      "0-15:2,20%%4", spec=spec))
        first = int(found[1])
        last = int(found[2]) if found[2] is not None else first
        step = int(found[3]) if found[3] is not None else 1
        if last < first or step < 1:
            raise ValueError(Sentence("%(spec)r: a range goes up (first-last) with a step of 1 "
                                      "or more", spec=spec))
        if last > MAX_TASK_ID:
            raise ValueError(Sentence("%(spec)r: task ids go from 0 to %(last)s", spec=spec,
                                      last=MAX_TASK_ID))
        ids.update(range(first, last + 1, step))
    if len(ids) > MAX_TASKS:
        raise ValueError(Sentence("%(spec)r: at most %(most)s tasks", spec=spec, most=MAX_TASKS))
    return ArraySpec(tuple(sorted(ids)), max_running)


def format_spec(task_ids: tuple[int, ...], max_running: int | None) -> str:
    """Task ids as Slurm ranges, steps kept: (0, 1, 2, 5) -> "0-2,5"; (0, 2, 4, 6) -> "0-6:2"."""
    parts: list[str] = []
    i = 0
    while i < len(task_ids):
        first = task_ids[i]
        step = task_ids[i + 1] - first if i + 1 < len(task_ids) else 0
        last = i
        while last + 1 < len(task_ids) and task_ids[last + 1] - task_ids[last] == step:
            last += 1
        if last - i >= 2 or (step == 1 and last > i):  # a run: three ids, or two in a row
            parts.append(f"{first}-{task_ids[last]}" + (f":{step}" if step > 1 else ""))
            i = last + 1
        else:
            parts.append(str(first))
            i += 1
    return ",".join(parts) + (f"%{max_running}" if max_running else "")
