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
