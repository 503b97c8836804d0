"""The gateway's own sentences in a job's `detail` and its events' (why a job waits, how it was
found, why it failed before running). They are stored in English, as the API answers them; the
web interface finds which one a stored text is (`sentence`) and says it in the viewer's language,
its values (Slurm's ids and messages, a date) as stored. Slurm's and SSH's own words pass
through as they are."""

from __future__ import annotations

import re

from consortium.texts import Sentence, translatable

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

_PLACEHOLDER = re.compile(r"%\\\((\w+)\\\)s")  # `%(name)s` once re.escape'd


def _reader(message: str) -> re.Pattern[str]:
    # each value as short as the rest allows: `until %(end)s: %(reason)s` splits at the first
    # `: `, as a reason may hold more
    return re.compile(_PLACEHOLDER.sub(r"(?P<\1>.+?)", re.escape(message)), re.DOTALL)


_READERS = [(message, _reader(message)) for message in (
    SUBMITTED, FOUND_BY_MARKER, INTERRUPTED, CANCELLED_UNSENT, FORWARDED, UNAVAILABLE,
    MAINTENANCE, NEVER_SENT, NEVER_RECEIVED, UNACCOUNTED, VANISHED)]


def sentence(text: str) -> str:
    """A stored detail as the Sentence it was written from, or as it is."""
    for message, reader in _READERS:
        found = reader.fullmatch(text)
        if found:
            return Sentence(message, **found.groupdict())
    return text
