"""Errors of the scheduler layer, raised at its boundary with the library's error as __cause__."""

from __future__ import annotations


class SchedulerError(Exception):
    """Base class. `maybe_executed` is True when the command may have run on the cluster
    (it was sent and no answer came back): a submit in that state must be settled by marker."""

    maybe_executed = False

    def __init__(self, message: str, *, cluster: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cluster = cluster


class SchedulerUnavailable(SchedulerError):
    """The cluster cannot be reached (connection refused, reset, DNS, daemon down)."""

    def __init__(self, message: str, *, cluster: str | None = None,
                 maybe_executed: bool = False) -> None:
        super().__init__(message, cluster=cluster)
        self.maybe_executed = maybe_executed


class SchedulerTimeout(SchedulerError):
    """A command did not answer within its timeout; it may have run."""

    maybe_executed = True


class SchedulerRejected(SchedulerError):
    """Slurm refused the request; `message` is Slurm's own words."""


class SchedulerAuthError(SchedulerError):
    """Authentication failed, or the host key is unknown or changed (refused, never added)."""


class PathRefused(SchedulerError):
    """A path outside the member's work directory (`..`, absolute, or through a symlink)."""


class IsADirectory(SchedulerRejected):
    """A file was asked for and the path is a directory (list it instead)."""


class NotADirectory(SchedulerRejected):
    """A listing was asked for and the path is not a directory."""
