"""Domain errors. They carry no HTTP: gateway/api/errors.py maps each class to a status."""

from __future__ import annotations

from typing import Any

from consortium.texts import translatable


class DomainError(Exception):
    """A refusal the caller can act on. `code` names the problem type (`/problems/{code}`)."""

    code = "error"
    title = translatable("Request refused")

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    """Absent, or present but outside what the caller may see (no existence leak)."""

    code = "not-found"
    title = translatable("Not found")


class PermissionDenied(DomainError):
    """The caller can see the object but its role or token scopes do not allow the action."""

    code = "forbidden"
    title = translatable("Forbidden")


class Conflict(DomainError):
    code = "conflict"
    title = translatable("Conflict")


class InvalidInput(DomainError):
    """Well-formed input that the domain refuses (an expired invitation, a bad slug...)."""

    code = "invalid-input"
    title = translatable("Invalid input")


class Unauthenticated(DomainError):
    code = "unauthenticated"
    title = translatable("Authentication required")


class Throttled(DomainError):
    code = "too-many-requests"
    title = translatable("Too many requests")

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after
