"""Bounds of the integers and instants every input takes (paths, queries, headers, bodies).

An unbounded integer reaches the database (SQLite and BIGINT stop at 2**63 - 1) and an instant
at the ends of the calendar overflows when converted to UTC (year 1 at +14:00): both were
500s. Declared here, once, they are a 422 naming the field, and the OpenAPI document shows them.
This module sits in the lowest of our packages so that every package's schemas can use it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from annotated_types import Interval
from pydantic import AfterValidator, AwareDatetime

from consortium.texts import Sentence

MAX_ID = 2**63 - 1  # BIGINT, and SQLite's INTEGER
MAX_MSU = 10**18 - 1  # the most an SU amount with 18 digits, 3 of them decimals, can say

Id = Annotated[int, Interval(ge=1, le=MAX_ID)]
Offset = Annotated[int, Interval(ge=0, le=MAX_ID)]  # a count from zero (bytes, event ids)
Msu = Annotated[int, Interval(ge=-MAX_MSU, le=MAX_MSU)]

# Far from both ends of `datetime`, so that the code may add or subtract years of margin.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _within_calendar(value: datetime) -> datetime:
    """Refuse an instant the code could not convert to UTC or move by a few years. A naive
    value is judged as UTC: the fields that take one say how they read it."""
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(Sentence("must lie between %(first)s and %(last)s (UTC)",
                                  first=EARLIEST.strftime("%Y-%m-%d"),
                                  last=LATEST.strftime("%Y-%m-%d")))
    return value


WithinCalendar = AfterValidator(_within_calendar)
Instant = Annotated[AwareDatetime, WithinCalendar]  # with an offset, within the calendar
