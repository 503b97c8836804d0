"""Response shapes shared by several routes."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Status(BaseModel):
    status: str
    detail: str | None = None


class Page(BaseModel, Generic[T]):
    """A page of a list in a stable order; pass `next_cursor` as `cursor` for the next page."""

    items: list[T]
    next_cursor: str | None = None
