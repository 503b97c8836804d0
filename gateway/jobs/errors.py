"""Refusals of the job domain. Their HTTP statuses: gateway.api.errors.STATUS_OF."""

from __future__ import annotations

from typing import Any

from consortium.errors import Conflict, DomainError, InvalidInput
from consortium.texts import translatable


class JobInputInvalid(InvalidInput):
    """Input that only the domain can judge (a partition's limits, a template's parameters),
    reported like FastAPI's own validation errors: a list of {loc, msg, type}."""

    code = "validation"
    title = translatable("Validation failed")

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
        super().__init__(f"invalid request: {fields}", errors=errors)

    @classmethod
    def at(cls, loc: tuple[str | int, ...], msg: str,
           type_: str = "value_error") -> JobInputInvalid:
        return cls([{"loc": ["body", *loc], "msg": msg, "type": type_}])


class ClusterUnavailable(DomainError):
    """The cluster could not be reached; nothing was done there. 503 with Retry-After."""

    code = "cluster-unavailable"
    title = translatable("Cluster unavailable")

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)


class ClusterTimeout(DomainError):
    """The cluster did not answer in time (504)."""

    code = "cluster-timeout"
    title = translatable("Cluster did not answer")


class SubmissionRejected(DomainError):
    """Slurm refused the job; `detail` is Slurm's own message (422)."""

    code = "scheduler-rejected"
    title = translatable("Rejected by the scheduler")


class SchedulerLimitReached(Conflict):
    """Slurm refused the job because of a limit of the account or QOS (409)."""

    code = "scheduler-limit"
    title = translatable("Scheduler limit reached")


class TooManyActiveJobs(Conflict):
    code = "too-many-jobs"
    title = translatable("Too many active jobs")


class IdempotencyKeyInFlight(Conflict):
    code = "idempotency-in-flight"
    title = translatable("A request with this Idempotency-Key is in progress")


class IdempotencyKeyReused(InvalidInput):
    code = "idempotency-key-reused"
    title = translatable("Idempotency-Key reused with another request")


class FileTooLarge(DomainError):
    code = "file-too-large"
    title = translatable("File too large")

    def __init__(self, limit: int) -> None:
        super().__init__(f"files are limited to {limit} bytes", limit=limit)
