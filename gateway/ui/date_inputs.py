"""Dates typed in the pages' filters (`<input type="date">`), as the instants the API's filters
take."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import Query

from consortium.errors import InvalidInput

# empty: no filter
DateText = Annotated[str, Query(max_length=10, pattern=r"^([0-9]{4}-[0-9]{2}-[0-9]{2})?$")]


def day_start(text: str, name: str, *, days_after: int = 0) -> datetime | None:
    """The start (UTC) of the day a date input gives, or of a day after it: an inclusive
    "until" is the start of the next day."""
    try:
        day = date.fromisoformat(text) if text else None
    except ValueError:
        raise InvalidInput(f"{name}: not a date") from None
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=days_after), time.min, tzinfo=UTC)
