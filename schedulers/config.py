"""Typed configuration of the clusters: where they are, who the gateway is there, what they cost."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Resource = Literal["gpu", "cpu", "mem_gb"]
# what a weight of 0 gives away, and the unit its weight is per
_PRICED: dict[Resource, tuple[str, str]] = {
    "gpu": ("GPUs", "SU per GPU-hour"),
    "cpu": ("CPUs", "SU per CPU-hour"),
    "mem_gb": ("memory", "SU per GiB-hour"),
}


class BillingWeights(_Strict):
    """SU per hour for one unit of each resource; a job's rate is the largest share (MAX_TRES).
    A partition refuses a weight left at 0 unless it lists that resource in `unpriced`."""

    gpu: float = Field(1.0, ge=0)
    cpu: float = Field(0.0, ge=0)
    mem_gb: float = Field(0.0, ge=0)


class Hardware(_Strict):
    """Green Algorithms figures of a partition's nodes (docs/sustainability.md: the model, the
    defaults and their sources). A partition without them has its jobs "not estimated"."""

    watts_per_core: float = Field(ge=0)  # per physical core (a CPU is a thread, cpus_per_core)
    watts_per_gb_mem: float = Field(0.3725, ge=0)  # per GiB allocated, used or not
    gpu_model: str | None = None  # a key of the cluster's gpu_watts; None: GPU jobs unestimated
    # the CPUs of one node: a job allocated all of its nodes' CPUs had them to itself, so
    # Slurm's node-level energy counter measured that job alone; None: never taken as measured
    cpus_per_node: int | None = Field(None, ge=1)
    # what the site's AcctGatherEnergyType counts: the whole node (ipmi, pm_counters) or CPU
    # sockets and DRAM only (rapl), which misses the GPUs: a GPU job's is then estimated
    energy_counter: Literal["node", "cpu_memory"] = "node"


# board power (W) of common training GPUs, from their makers' datasheets; "any" is Green
# Algorithms' generic GPU
GPU_WATTS = {
    "a100-sxm4": 400.0, "a100-pcie-40gb": 250.0, "a100-pcie-80gb": 300.0,
    "h100-sxm5": 700.0, "h100-pcie": 350.0, "mi250x": 560.0, "any": 200.0,
}


class PartitionConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    max_time_minutes: int = Field(ge=1)
    max_nodes: int = Field(1, ge=1)
    max_cpus_per_job: int = Field(ge=1)
    max_gpus_per_job: int = Field(0, ge=0)
    max_mem_mb_per_job: int = Field(ge=1)
    # Slurm allocates whole cores where SelectTypeParameters is CR_Core* and nodes have
    # ThreadsPerCore > 1: `-c 1` then gets (and is charged) 2 CPUs. A job's CPUs are priced,
    # held and checked (gateway.jobs.widening) rounded up to this many, so the hold covers what
    # Slurm allocates and the tracker does not take the rounding for a widened job.
    cpus_per_core: int = Field(1, ge=1, le=16)

    def allocated_cpus(self, cpus: int) -> int:
        """The CPUs Slurm allocates for `cpus`: whole cores of `cpus_per_core` threads."""
        return -(-cpus // self.cpus_per_core) * self.cpus_per_core
    billing: BillingWeights = BillingWeights()
    # resources this partition gives away on purpose (their weight stays 0). Under MAX_TRES a
    # weight left at 0 lets a job take all of that resource for the price of the others.
    unpriced: tuple[Resource, ...] = ()
    hardware: Hardware | None = None

    @model_validator(mode="after")
    def _check_prices(self) -> Self:
        offered: tuple[Resource, ...] = (
            ("cpu", "mem_gb", "gpu") if self.max_gpus_per_job else ("cpu", "mem_gb"))
        free = [r for r in offered if getattr(self.billing, r) == 0 and r not in self.unpriced]
        if free:
            raise ValueError(
                f'partition "{self.name}" gives its {" and ".join(_PRICED[r][0] for r in free)} '
                f"away: {' and '.join(f'billing.{r}' for r in free)} "
                f"{'is' if len(free) == 1 else 'are'} 0. Set "
                f"{', '.join(f'billing.{r} ({_PRICED[r][1]})' for r in free)}, or write "
                f"unpriced = {json.dumps(free)} if that is intended")
        priced = [r for r in self.unpriced if getattr(self.billing, r) != 0]
        if priced:
            raise ValueError(f'partition "{self.name}" lists {json.dumps(priced)} in unpriced '
                             "but gives a non-zero billing weight: keep one of the two")
        return self


class IdentityConfig(_Strict):
    """An account the gateway logs in as. The key file stays on the gateway host."""

    unix_user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    key_file: Path


class MaintenanceWindow(_Strict):
    """A declared outage: submissions wait for its end instead of being tried (docs/jobs.md)."""

    start: AwareDatetime
    end: AwareDatetime
    reason: str = Field("maintenance", max_length=200)

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.end <= self.start:
            raise ValueError("a maintenance window ends after it starts")
        return self

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end


class ClusterConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    backend: Literal["slurm_ssh", "local", "pyslurm"]
    host: str = "127.0.0.1"
    port: int = Field(22, ge=1, le=65535)
    known_hosts: Path | None = None
    # identity name -> account; a member's cluster identity refers to one by name
    identities: dict[str, IdentityConfig] = {}
    admin: IdentityConfig | None = None
    # each member's work directory, {unix_user} substituted
    work_root: str = "/home/{unix_user}/hpcgw"
    partitions: list[PartitionConfig] = Field(min_length=1)
    # Slurm's billing TRES for a rate of 1 SU/h: TRESBillingWeights are our weights times this.
    # Slurm truncates billing to an integer, so weights in SU would bill small jobs as 0.
    slurm_billing_scale: int = Field(1000, ge=1)
    # the footprint's figures (docs/sustainability.md gives the sources): the site's PUE, the
    # grid's carbon intensity with its scope and year, board power per GPU model
    pue: float = Field(1.56, ge=1.0)
    carbon_intensity_g_per_kwh: float = Field(21.7, ge=0)
    carbon_scope: Literal["direct", "lifecycle"] = "direct"
    carbon_year: int = Field(2024, ge=1990, le=2100)
    gpu_watts: dict[str, float] = Field(default_factory=lambda: dict(GPU_WATTS))
    connect_timeout: float = Field(10.0, gt=0)
    command_timeout: float = Field(30.0, gt=0)
    pool_size: int = Field(4, ge=1, le=64)
    idle_timeout: float = Field(300.0, gt=0)
    keepalive: int = Field(30, ge=0)
    # local backend: where job directories live and how many CPU slots run at once
    local_root: Path | None = None
    cpu_slots: int = Field(2, ge=1)
    # a submission that finds the cluster unreachable fails (503), or waits for it (`queue`)
    # unless it says otherwise; during a maintenance window it waits unless it says `fail`
    when_unavailable: Literal["fail", "queue"] = "fail"
    maintenance: list[MaintenanceWindow] = []

    @model_validator(mode="after")
    def _check_backend(self) -> Self:
        if self.backend == "slurm_ssh":
            if self.known_hosts is None:
                raise ValueError("slurm_ssh needs known_hosts: host keys are pinned, never trusted "
                                 "on first use")
            if self.admin is None:
                raise ValueError("slurm_ssh needs an admin identity (sacct, sacctmgr)")
        names = [p.name for p in self.partitions]
        if len(set(names)) != len(names):
            raise ValueError("partition names must be unique")
        return self

    @model_validator(mode="after")
    def _check_gpu_models(self) -> Self:
        unknown = sorted({p.hardware.gpu_model for p in self.partitions if p.hardware
                          and p.hardware.gpu_model and p.hardware.gpu_model not in self.gpu_watts})
        if unknown:
            raise ValueError(f"gpu_model {', '.join(unknown)} has no figure in gpu_watts "
                             f"(known: {', '.join(sorted(self.gpu_watts))})")
        return self

    def partition(self, name: str) -> PartitionConfig | None:
        return next((p for p in self.partitions if p.name == name), None)

    @property
    def logs_in(self) -> bool:
        """Whether members' identities are logins (their key ref names one of `identities`);
        the local backend runs every job as the gateway's own user."""
        return self.backend != "local"

    def maintenance_at(self, at: datetime) -> MaintenanceWindow | None:
        """The declared maintenance window `at` falls in (the latest ending, if several)."""
        windows = [w for w in self.maintenance if w.covers(at)]
        return max(windows, key=lambda w: w.end) if windows else None
