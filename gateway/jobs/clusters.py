"""The clusters a job can go to: their configuration, their scheduler, and who a member is there."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from consortium.models import ClusterIdentity
from gateway.jobs.errors import JobInputInvalid
from schedulers.base import Scheduler
from schedulers.config import ClusterConfig
from schedulers.models import Identity


@dataclass(frozen=True)
class Cluster:
    config: ClusterConfig
    scheduler: Scheduler

    @property
    def name(self) -> str:
        return self.config.name


class Clusters:
    """The configured clusters, in configuration order (the first is the default)."""

    def __init__(self, configs: list[ClusterConfig], schedulers: Mapping[str, Scheduler]) -> None:
        self._clusters = {
            config.name: Cluster(config, schedulers[config.name])
            for config in configs if config.name in schedulers
        }

    def __iter__(self) -> Iterator[Cluster]:
        return iter(self._clusters.values())

    def __len__(self) -> int:
        return len(self._clusters)

    def get(self, name: str | None, *, loc: tuple[str, ...] = ("cluster",)) -> Cluster:
        """The named cluster (the first one when None), or a 422 naming the field."""
        if name is None:
            if not self._clusters:
                raise JobInputInvalid.at(loc, "no cluster is configured on this gateway")
            return next(iter(self._clusters.values()))
        found = self._clusters.get(name)
        if found is None:
            raise JobInputInvalid.at(
                loc, f"unknown cluster; configured: {', '.join(self._clusters) or 'none'}")
        return found


def identity_for(config: ClusterConfig, account: ClusterIdentity) -> Identity:
    """A member's account on a cluster as the scheduler layer sees it.

    `ssh_key_ref` names an identity of the cluster's configuration, or is a key file path.
    A relative work root of the local backend lives under its `local_root`.
    """
    named = config.identities.get(account.ssh_key_ref)
    key_file = str(named.key_file) if named else account.ssh_key_ref
    root = config.work_root.format(unix_user=account.unix_user)
    if config.backend == "local" and not PurePosixPath(root).is_absolute():
        if config.local_root is None:
            raise ValueError(f"cluster {config.name}: the local backend needs local_root")
        root = str(config.local_root / root)
    return Identity(name=account.unix_user, unix_user=account.unix_user, key_file=key_file,
                    work_root=root)
