"""Settings of the job domain (`[jobs]` in the TOML file, HPCGW_JOBS__* variables)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from schedulers.config import ClusterConfig


class JobsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the tracker: one loop per cluster, in `hpcgw serve` unless disabled, or `hpcgw tracker`
    tracker_in_serve: bool = True
    tracker_interval_seconds: float = Field(5.0, gt=0)
    tracker_max_backoff_seconds: float = Field(300.0, gt=0)
    # a replica that stopped renewing its lease loses the cluster after this long
    tracker_lease_seconds: float = Field(60.0, gt=0)
    # a job still `accepted`/`submitting` this long after its last change lost its submitter
    # (a crash): the tracker looks for it by marker. Longer than any submit call can last.
    submit_grace_seconds: float = Field(180.0, gt=0)
    # an `unknown` job whose marker Slurm still does not know after this long never got there
    marker_grace_seconds: float = Field(300.0, gt=0)
    # a queued job absent from squeue and from sacct this long is declared lost
    vanished_grace_seconds: float = Field(900.0, gt=0)
    # the tracker records its cluster's health (gateway.jobs.cluster_status) at most this often
    health_interval_seconds: float = Field(15.0, gt=0)
    # a suspended member's queued jobs: held until reactivation, or cancelled (their holds
    # refunded by settlement); either way its Slurm associations take no new job
    suspended_jobs: Literal["hold", "cancel"] = "hold"

    idempotency_ttl: timedelta = timedelta(hours=24)
    # a key still in flight this long after its request began belongs to a request that died
    idempotency_in_flight_timeout: timedelta = timedelta(minutes=5)

    # jobs not yet ended per member, unless the member has a cap of its own
    max_active_jobs_per_member: int = Field(200, ge=1)
    # Retry-After of a 503 when a cluster cannot be reached
    retry_after_seconds: int = Field(30, ge=1)
    # a cluster found unreachable is probed for at most this long before a submission to it
    # is refused (503), rather than each waiting for sbatch's own timeout (gateway.jobs.health)
    down_probe_seconds: float = Field(1.0, gt=0)
    # the longest a `waiting` job waits for its cluster (counted from the end of the
    # maintenance window it was accepted in), and so the most a request may ask for
    max_wait_minutes: int = Field(3 * 24 * 60, ge=1)

    output_default_limit: int = Field(64 * 1024, ge=1)
    output_max_limit: int = Field(1024 * 1024, ge=1)
    file_max_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # server-sent event streams: how often they look, and how long one lasts at most
    stream_poll_seconds: float = Field(1.0, gt=0)
    stream_max_seconds: float = Field(900.0, gt=0)


class JobsConfig(Protocol):
    """What the job domain reads of the gateway's settings: `gateway.settings.Settings` is one.
    The settings hold this package's section; the package never imports the settings."""

    @property
    def clusters(self) -> list[ClusterConfig]: ...

    @property
    def jobs(self) -> JobsSettings: ...
