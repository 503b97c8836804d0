"""The gateway's own sentences in a job's details: each stored text is read back as the
sentence it was written from, with its values; anything else passes through."""

from __future__ import annotations

import pytest

from consortium.texts import Sentence
from gateway.jobs import details

WRITTEN = [
    (details.SUBMITTED, {"id": "4242"}),
    (details.FOUND_BY_MARKER, {"id": "17_3"}),
    (details.INTERRUPTED, {}),
    (details.CANCELLED_UNSENT, {}),
    (details.FORWARDED, {}),
    (details.UNAVAILABLE, {"reason": "SchedulerUnavailable: ssh: [Errno 111]: refused"}),
    (details.MAINTENANCE, {"end": "2026-12-03 08:00 UTC",
                           "reason": "new GPUs: racks 3: and 4\non Tuesday"}),
    (details.NEVER_SENT, {}),
    (details.NEVER_RECEIVED, {}),
    (details.UNACCOUNTED, {"state": "NODE_FAIL"}),
    (details.VANISHED, {}),
    (details.WIDENED, {"excess": "cpus 4 > 1, time limit 30 min > 5 min"}),
]


@pytest.mark.parametrize(("message", "values"), WRITTEN)
def test_a_stored_detail_is_read_back_as_its_sentence(message: str,
                                                      values: dict[str, str]) -> None:
    stored = message % values if values else message
    read = details.sentence(stored)
    assert isinstance(read, Sentence)
    assert (read, read.message, read.values) == (stored, message, values)


@pytest.mark.parametrize("text", [
    "Batch job submission failed: Invalid account or account/partition combination specified",
    "slurm id", "see slurm id 12", "SchedulerTimeout: sbatch did not answer"])
def test_other_texts_pass_through(text: str) -> None:
    assert not isinstance(details.sentence(text), Sentence)
    assert details.sentence(text) == text


def test_an_arrays_end_is_read_back_with_each_states_count() -> None:
    stored = details.tasks_ended({"completed": 3, "failed": 1, "timeout": 2}, None)
    assert stored == "tasks: 3 completed, 1 failed, 2 timeout"  # the API's words, unchanged
    read = details.sentence(stored)
    assert isinstance(read, Sentence) and read == stored and read.message == details.TASKS
    listed = read.values["counts"]
    assert isinstance(listed, Sentence) and listed == "3 completed, 1 failed, 2 timeout"
    counted = [listed.values["after"], listed.values["before"].values["after"],  # type: ignore[attr-defined]
               listed.values["before"].values["before"]]  # type: ignore[attr-defined]
    assert [(c.message, c.values) for c in counted] == [
        ("%(count)s timeout", {"count": "2"}), ("%(count)s failed", {"count": "1"}),
        ("%(count)s completed", {"count": "3"})]


def test_a_widened_arrays_end_says_why_then_its_tasks() -> None:
    why = details.widened(["array tasks 5 > 3"])
    assert why == "Slurm held more than the gateway priced: array tasks 5 > 3; cancelled"
    assert details.is_widened(why)
    stored = details.tasks_ended({"cancelled": 5}, why)
    assert stored == f"{why} (tasks: 5 cancelled)"
    assert details.is_widened(stored)
    read = details.sentence(stored)
    assert isinstance(read, Sentence) and read.message == details.WIDENED_TASKS
    assert [v.message for v in read.values.values()] == [  # type: ignore[attr-defined]
        details.WIDENED, details.TASKS]
    assert not details.is_widened("tasks: 5 cancelled")
    assert not details.is_widened(None)


@pytest.mark.parametrize("text", [
    "tasks: 3 completed, 1 exploded", "tasks: three completed", "tasks: 3 completed,",
    "reason (tasks: 3 completed)", "Slurm held more than the gateway priced: cpus 2 > 1 (x)"])
def test_counts_and_ends_of_other_forms_pass_through(text: str) -> None:
    assert not isinstance(details.sentence(text), Sentence)
