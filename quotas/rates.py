"""Service units and the one pricing rule.

1 SU is one reference-GPU-hour. A partition prices a job per hour as the largest of its weighted
shares (Slurm's PriorityFlags=MAX_TRES): rate = max(gpus * w_gpu, cpus * w_cpu, GiB * w_mem),
the weights coming from the cluster configuration. Amounts are integer milli-SU everywhere.

`price` is the only function that turns resources and time into milli-SU: the quote at submit
(requested resources * time limit) and the charge at the end (allocated resources * elapsed)
both go through it, so they can never disagree on the rule. It rounds up to the next whole
milli-SU, so a member pays at most 0.001 SU more than the exact figure per job, never less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import ceil
from typing import Protocol

from consortium.texts import Sentence

MSU_PER_SU = 1000
SECONDS_PER_HOUR = 3600
MIB_PER_GIB = 1024  # memory weights are per GiB, as Slurm's `Mem=<w>G` billing weight
# Slurm counts `billing` per minute: with its TRESBillingWeights equal to ours, one SU (one hour
# at rate 1) is 60 billing-minutes; with weights `scale` times ours, 60 x scale.
BILLING_MINUTES_PER_SU = 60
_THOUSANDTH = Decimal("0.001")


class Weights(Protocol):
    """SU per hour for one unit of each resource (schedulers.config.BillingWeights is one)."""

    @property
    def gpu(self) -> float: ...
    @property
    def cpu(self) -> float: ...
    @property
    def mem_gb(self) -> float: ...


class PartitionLike(Protocol):
    """What the rate card reads from a partition (schedulers.config.PartitionConfig is one)."""

    @property
    def name(self) -> str: ...
    @property
    def billing(self) -> Weights: ...
    @property
    def max_time_minutes(self) -> int: ...
    @property
    def max_cpus_per_job(self) -> int: ...
    @property
    def max_gpus_per_job(self) -> int: ...
    @property
    def max_mem_mb_per_job(self) -> int: ...


@dataclass(frozen=True)
class Amounts:
    """Resources of a job: what it asks for (quote) or what Slurm gave it (charge)."""

    gpus: int = 0
    cpus: int = 1
    mem_mb: int = 0

    def __post_init__(self) -> None:
        if min(self.gpus, self.cpus, self.mem_mb) < 0:
            raise ValueError("resource amounts cannot be negative")


def _exact(weight: float) -> Fraction:
    # the decimal the operator wrote (0.1 stays one tenth, not the nearest binary float)
    return Fraction(repr(weight))


def rate_per_hour(weights: Weights, amounts: Amounts) -> Fraction:
    """Exact SU per hour of these resources on a partition with these weights."""
    return max(
        amounts.gpus * _exact(weights.gpu),
        amounts.cpus * _exact(weights.cpu),
        Fraction(amounts.mem_mb, MIB_PER_GIB) * _exact(weights.mem_gb),
    )


def price(weights: Weights, amounts: Amounts, seconds: int) -> int:
    """Milli-SU for holding these resources for `seconds`, rounded up to a whole milli-SU."""
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return ceil(rate_per_hour(weights, amounts) * seconds * MSU_PER_SU / SECONDS_PER_HOUR)


def to_su(msu: int) -> Decimal:
    """Milli-SU as SU with exactly three decimals (what people read)."""
    return (Decimal(msu) / MSU_PER_SU).quantize(_THOUSANDTH)


def format_su(msu: int) -> str:
    """`4.555 SU`, a Sentence: the pages write its amount as the viewer's language does."""
    return Sentence("%(su)s SU", su=to_su(msu))


def from_su(su: Decimal) -> int:
    """SU given by a person (at most three decimals) as milli-SU."""
    msu = su * MSU_PER_SU
    if msu != msu.to_integral_value():
        raise ValueError(Sentence("SU amounts have at most three decimals (whole milli-SU)"))
    return int(msu)


def billing_minutes(msu: int, scale: int = 1) -> int:
    """Slurm billing-minutes for an amount, rounded up. `scale` is the cluster's billing for a
    rate of 1 SU/h (its TRESBillingWeights are ours x scale: 1000 bills in milli-SU, which
    Slurm's integer billing does not truncate to 0 for small jobs)."""
    return -(-msu * BILLING_MINUTES_PER_SU * scale // MSU_PER_SU)


@dataclass(frozen=True)
class PartitionRate:
    """One line of the published rate card: the weights and what they cost per hour."""

    cluster: str
    partition: str
    gpu_weight: float
    cpu_weight: float
    mem_gb_weight: float
    msu_per_gpu_hour: int
    msu_per_cpu_hour: int
    msu_per_gb_hour: int
    max_time_minutes: int
    max_job_msu_per_hour: int  # the largest job the partition accepts, for one hour


def rate_card(cluster: str, partitions: Sequence[PartitionLike]) -> list[PartitionRate]:
    """The rate card of a cluster: priced by `price`, from the configuration the quotes use."""
    card = []
    for partition in partitions:
        weights = partition.billing

        def hourly(amounts: Amounts, weights: Weights = weights) -> int:
            return price(weights, amounts, SECONDS_PER_HOUR)

        card.append(PartitionRate(
            cluster=cluster,
            partition=partition.name,
            gpu_weight=weights.gpu,
            cpu_weight=weights.cpu,
            mem_gb_weight=weights.mem_gb,
            msu_per_gpu_hour=hourly(Amounts(gpus=1, cpus=0)),
            msu_per_cpu_hour=hourly(Amounts(cpus=1)),
            msu_per_gb_hour=hourly(Amounts(cpus=0, mem_mb=MIB_PER_GIB)),
            max_time_minutes=partition.max_time_minutes,
            max_job_msu_per_hour=hourly(Amounts(gpus=partition.max_gpus_per_job,
                                                cpus=partition.max_cpus_per_job,
                                                mem_mb=partition.max_mem_mb_per_job)),
        ))
    return card
