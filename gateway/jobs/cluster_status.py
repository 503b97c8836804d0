"""Each cluster's health as its tracker last saw it, and what the gateway offers there.

The tracker holding a cluster's lease probes it (SSH, slurmctld, slurmdbd: `Scheduler.status`)
at most every `jobs.health_interval_seconds` and stores the answer in `cluster_health`, so that
every replica answers `GET /api/v1/clusters` alike and no request waits on SSH. In the same
turn, when the cluster answered, it tells the `on_answered` listeners: gateway.provisioning
installs one that retries the cluster's pending identity provisioning (the job domain cannot
import it: provisioning sits above, and uses, the job domain).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Boolean, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from consortium.base import Base, UTCDateTime, utcnow
from consortium.errors import NotFound
from gateway.db import Database
from gateway.jobs.clusters import Cluster
from gateway.jobs.config import JobsConfig, JobsSettings
from gateway.logging import log
from quotas.rates import rate_card
from quotas.schemas import PartitionRateOut
from schedulers.config import ClusterConfig
from schedulers.models import ClusterStatus

_DETAIL_LENGTH = 500

# told, in the tracker's turn, that its cluster answered the probe; must not raise
AnsweredListener = Callable[[Database, Cluster, JobsConfig], Awaitable[None]]
_answered: list[AnsweredListener] = []


def on_answered(listener: AnsweredListener) -> AnsweredListener:
    """Register a listener (idempotent; usable as a decorator)."""
    if listener not in _answered:
        _answered.append(listener)
    return listener


class ClusterHealth(Base):
    """One row per cluster: its latest probe."""

    __tablename__ = "cluster_health"

    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reachable: Mapped[bool] = mapped_column(Boolean)
    slurmctld: Mapped[bool | None] = mapped_column(Boolean)
    slurmdbd: Mapped[bool | None] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(String(_DETAIL_LENGTH))


# --- what the API shows -------------------------------------------------------------------


class ClusterHealthOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    checked_at: datetime = Field(description="when the cluster's tracker probed it")
    reachable: bool = Field(description="the gateway logged in and ran a command (SSH)")
    slurmctld: bool | None = Field(description="scontrol ping; null: not known")
    slurmdbd: bool | None = Field(description="sacctmgr answered; null: not known")
    detail: str | None


class PartitionOut(BaseModel):
    name: str
    max_time_minutes: int
    max_nodes: int
    max_cpus_per_job: int
    max_gpus_per_job: int
    max_mem_mb_per_job: int
    rate: PartitionRateOut


class ClusterView(BaseModel):
    name: str
    backend: str
    partitions: list[PartitionOut]
    health: ClusterHealthOut | None = Field(
        description="as the cluster's tracker last saw it; null: never probed yet")


def _view(config: ClusterConfig, health: ClusterHealth | None) -> ClusterView:
    rates = {rate.partition: rate for rate in rate_card(config.name, config.partitions)}
    return ClusterView(
        name=config.name, backend=config.backend,
        partitions=[PartitionOut(
            name=p.name, max_time_minutes=p.max_time_minutes, max_nodes=p.max_nodes,
            max_cpus_per_job=p.max_cpus_per_job, max_gpus_per_job=p.max_gpus_per_job,
            max_mem_mb_per_job=p.max_mem_mb_per_job, rate=PartitionRateOut.of(rates[p.name]),
        ) for p in config.partitions],
        health=ClusterHealthOut.model_validate(health) if health is not None else None)


def cluster_views(session: Session, clusters: Sequence[ClusterConfig]) -> list[ClusterView]:
    """Every configured cluster, in configuration order, with its last recorded health."""
    health = {row.cluster: row for row in session.scalars(select(ClusterHealth))}
    return [_view(config, health.get(config.name)) for config in clusters]


def cluster_view(session: Session, clusters: Sequence[ClusterConfig], name: str) -> ClusterView:
    config = next((c for c in clusters if c.name == name), None)
    if config is None:
        raise NotFound(f"no cluster '{name}'")
    return _view(config, session.get(ClusterHealth, name))


# --- what the tracker records ------------------------------------------------------------


def _due(session: Session, cluster: str, now: datetime, interval: timedelta) -> bool:
    last = session.scalar(select(ClusterHealth.checked_at).where(ClusterHealth.cluster == cluster))
    return last is None or now - last >= interval


def record(session: Session, status: ClusterStatus, now: datetime) -> None:
    row = session.get(ClusterHealth, status.cluster)
    if row is None:
        row = ClusterHealth(cluster=status.cluster)
        session.add(row)
    row.checked_at, row.reachable = now, status.reachable
    row.slurmctld, row.slurmdbd = status.slurmctld, status.slurmdbd
    row.detail = status.detail[:_DETAIL_LENGTH]


@dataclass(frozen=True)
class _Only:
    """The settings as one cluster's tracker knows them (a JobsConfig)."""

    clusters: list[ClusterConfig]
    jobs: JobsSettings


async def observe(database: Database, cluster: Cluster,
                  jobs: JobsSettings) -> ClusterStatus | None:
    """The tracker's turn (it holds the cluster's lease): probe and record the cluster's health
    when due, then tell the `on_answered` listeners if it answered. Never raises: a failure here
    must not stop the tracking of jobs. The probe, or None when not due (or failed)."""
    interval = timedelta(seconds=jobs.health_interval_seconds)

    def due() -> bool:
        with database.transaction(write=False) as session:
            return _due(session, cluster.name, utcnow(), interval)

    def store(status: ClusterStatus) -> None:
        with database.transaction() as session:
            record(session, status, utcnow())

    try:
        if not await anyio.to_thread.run_sync(due):
            return None
        status = await cluster.scheduler.status()
        await anyio.to_thread.run_sync(store, status)
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("cluster health not recorded", cluster=cluster.name)
        return None
    if status.reachable:
        for listener in list(_answered):
            await listener(database, cluster, _Only([cluster.config], jobs))
    return status
