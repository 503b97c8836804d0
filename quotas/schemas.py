"""What the quotas' API and CLI take and give. Every amount goes out twice: integer milli-SU
(for programs) and SU with three decimals (for people); it comes in as either, not both."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from consortium.bounds import Instant, Msu
from consortium.texts import Sentence
from quotas.models import (
    Alert,
    AlertKind,
    Allocation,
    AllocationKind,
    AllocationState,
    EntryKind,
    LedgerEntry,
)
from quotas.rates import PartitionRate, from_su, to_su
from quotas.thresholds import describe
from quotas.usage import Line, Pace, UsageReport

SuIn = Annotated[Decimal, Field(max_digits=18, decimal_places=3)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9:_.-]{1,64}$")]


class Amount(BaseModel):
    msu: int = Field(description="milli-SU (1 SU = one reference-GPU-hour)")
    su: Decimal = Field(description="SU, three decimals")

    @classmethod
    def of(cls, msu: int) -> Amount:
        return cls(msu=msu, su=to_su(msu))


def _one_amount(su: Decimal | None, msu: int | None, name: str, *, required: bool) -> int | None:
    if su is not None and msu is not None:
        raise ValueError(Sentence("give %(name)s_su or %(name)s_msu, not both", name=name))
    if su is not None:
        return from_su(su)
    if msu is None and required:
        raise ValueError(Sentence("%(name)s_su or %(name)s_msu is required", name=name))
    return msu


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllocationIn(_In):
    amount_su: SuIn | None = Field(None, gt=0)
    amount_msu: Msu | None = Field(None, gt=0)
    kind: AllocationKind = AllocationKind.grant
    starts_at: Instant | None = Field(None, description="default: now")
    ends_at: Instant
    project: str | None = Field(None, max_length=64,
                                description="slug of the member's project it is earmarked to")
    overdraft_su: SuIn | None = Field(None, ge=0)
    overdraft_msu: Msu | None = Field(None, ge=0)
    note: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _amounts(self) -> Self:
        _one_amount(self.amount_su, self.amount_msu, "amount", required=True)
        _one_amount(self.overdraft_su, self.overdraft_msu, "overdraft", required=False)
        return self

    @property
    def msu(self) -> int:
        return _one_amount(self.amount_su, self.amount_msu, "amount", required=True) or 0

    @property
    def overdraft(self) -> int:
        return _one_amount(self.overdraft_su, self.overdraft_msu, "overdraft",
                           required=False) or 0


class AdjustmentIn(_In):
    amount_su: SuIn | None = Field(None, description="signed: negative takes hours back")
    amount_msu: Msu | None = None
    reason: Reason

    @model_validator(mode="after")
    def _amount(self) -> Self:
        if not _one_amount(self.amount_su, self.amount_msu, "amount", required=True):
            raise ValueError(Sentence("an adjustment cannot be zero"))
        return self

    @property
    def msu(self) -> int:
        return _one_amount(self.amount_su, self.amount_msu, "amount", required=True) or 0


class RefundIn(_In):
    job_id: JobId
    amount_su: SuIn | None = Field(None, gt=0, description="default: all that is left")
    amount_msu: Msu | None = Field(None, gt=0)
    reason: Reason

    @model_validator(mode="after")
    def _amount(self) -> Self:
        _one_amount(self.amount_su, self.amount_msu, "amount", required=False)
        return self

    @property
    def msu(self) -> int | None:
        return _one_amount(self.amount_su, self.amount_msu, "amount", required=False)


class AllocationOut(BaseModel):
    id: int
    member_id: int
    project_id: int | None
    kind: AllocationKind
    state: AllocationState
    starts_at: datetime
    ends_at: datetime
    note: str
    created_at: datetime
    created_by: str
    closed_at: datetime | None
    granted: Amount
    overdraft: Amount
    charged: Amount
    refunded: Amount
    used: Amount = Field(description="charged - refunded")
    held: Amount = Field(description="open holds of pending and running jobs")
    expired: Amount
    available: Amount = Field(description="granted + overdraft - used - held - expired")

    @classmethod
    def of(cls, a: Allocation) -> AllocationOut:
        return cls(
            id=a.id, member_id=a.member_id, project_id=a.project_id, kind=a.kind, state=a.state,
            starts_at=a.starts_at, ends_at=a.ends_at, note=a.note, created_at=a.created_at,
            created_by=a.created_by, closed_at=a.closed_at, granted=Amount.of(a.granted_msu),
            overdraft=Amount.of(a.overdraft_msu), charged=Amount.of(a.charged_msu),
            refunded=Amount.of(a.refunded_msu), used=Amount.of(a.used_msu),
            held=Amount.of(a.held_msu), expired=Amount.of(a.expired_msu),
            available=Amount.of(a.available_msu),
        )


class LedgerEntryOut(BaseModel):
    id: int
    at: datetime
    allocation_id: int
    kind: EntryKind
    amount: Amount = Field(description="signed by its effect on what is left")
    project_id: int | None
    user_id: int | None
    cluster: str | None
    partition: str | None
    job_id: str | None
    actor: str
    reason: str

    @classmethod
    def of(cls, e: LedgerEntry) -> LedgerEntryOut:
        return cls(id=e.id, at=e.at, allocation_id=e.allocation_id, kind=e.kind,
                   amount=Amount.of(e.amount_msu), project_id=e.project_id, user_id=e.user_id,
                   cluster=e.cluster, partition=e.partition, job_id=e.job_id, actor=e.actor,
                   reason=e.reason)


class BreakdownLine(BaseModel):
    key: str
    label: str
    used: Amount
    held: Amount

    @classmethod
    def of(cls, line: Line) -> BreakdownLine:
        return cls(key=line.key, label=line.label, used=Amount.of(line.used_msu),
                   held=Amount.of(line.held_msu))


class PaceOut(BaseModel):
    window_days: int
    used: Amount
    per_day: Amount
    projected_exhaustion: datetime | None
    before_period_end: bool | None

    @classmethod
    def of(cls, pace: Pace) -> PaceOut:
        return cls(window_days=pace.window_days, used=Amount.of(pace.used_msu),
                   per_day=Amount.of(pace.msu_per_day),
                   projected_exhaustion=pace.projected_exhaustion,
                   before_period_end=pace.before_period_end)


class UsageOut(BaseModel):
    member_id: int
    at: datetime
    allocated: Amount = Field(description="granted to the member's current allocations")
    overdraft: Amount
    used: Amount
    held: Amount
    open_holds: int = Field(description="pending and running jobs holding quota")
    available: Amount = Field(description="what new jobs can take now")
    percent_used: Decimal | None
    period_end: datetime | None
    pace: list[PaceOut] = Field(description="burn rate over the last 7 and 30 days")
    by_project: list[BreakdownLine]
    by_user: list[BreakdownLine]
    by_partition: list[BreakdownLine]
    by_month: list[BreakdownLine]
    allocations: list[AllocationOut]

    @classmethod
    def of(cls, r: UsageReport) -> UsageOut:
        def lines(items: list[Line]) -> list[BreakdownLine]:
            return [BreakdownLine.of(line) for line in items]

        return cls(
            member_id=r.member_id, at=r.at, allocated=Amount.of(r.granted_msu),
            overdraft=Amount.of(r.overdraft_msu), used=Amount.of(r.used_msu),
            held=Amount.of(r.held_msu), open_holds=r.open_holds,
            available=Amount.of(r.available_msu), percent_used=r.percent_used,
            period_end=r.period_end, pace=[PaceOut.of(p) for p in r.pace],
            by_project=lines(r.by_project), by_user=lines(r.by_user),
            by_partition=lines(r.by_partition), by_month=lines(r.by_month),
            allocations=[AllocationOut.of(a) for a in r.allocations],
        )


class AlertOut(BaseModel):
    id: int
    allocation_id: int
    kind: AlertKind
    fired_at: datetime
    granted: Amount
    used: Amount
    projected_exhaustion_at: datetime | None
    mailed_at: datetime | None
    message: str

    @classmethod
    def of(cls, alert: Alert) -> AlertOut:
        return cls(id=alert.id, allocation_id=alert.allocation_id, kind=alert.kind,
                   fired_at=alert.fired_at, granted=Amount.of(alert.granted_msu),
                   used=Amount.of(alert.used_msu),
                   projected_exhaustion_at=alert.projected_exhaustion_at,
                   mailed_at=alert.mailed_at, message=describe(alert))


class Weights(BaseModel):
    gpu: float = Field(description="SU per GPU-hour")
    cpu: float = Field(description="SU per core-hour")
    mem_gb: float = Field(description="SU per GiB-hour")


class PartitionRateOut(BaseModel):
    partition: str
    weights: Weights
    per_gpu_hour: Amount
    per_cpu_hour: Amount
    per_gb_hour: Amount
    max_time_minutes: int
    max_job_per_hour: Amount = Field(description="the largest job the partition takes")

    @classmethod
    def of(cls, rate: PartitionRate) -> PartitionRateOut:
        return cls(partition=rate.partition,
                   weights=Weights(gpu=rate.gpu_weight, cpu=rate.cpu_weight,
                                   mem_gb=rate.mem_gb_weight),
                   per_gpu_hour=Amount.of(rate.msu_per_gpu_hour),
                   per_cpu_hour=Amount.of(rate.msu_per_cpu_hour),
                   per_gb_hour=Amount.of(rate.msu_per_gb_hour),
                   max_time_minutes=rate.max_time_minutes,
                   max_job_per_hour=Amount.of(rate.max_job_msu_per_hour))


RATE_RULE = ("SU per hour = max(gpus * weights.gpu, cpus * weights.cpu, GiB * weights.mem_gb); "
             "a job's quote is that rate x its time limit, its charge that rate (of the "
             "resources Slurm allocated) x its elapsed time, both rounded up to a whole "
             "milli-SU. Jobs killed by a node or boot failure are refunded.")


class RateCardOut(BaseModel):
    cluster: str
    rule: str = RATE_RULE
    partitions: list[PartitionRateOut]


class BalanceDriftOut(BaseModel):
    """An allocation's balance column that differs from what its entries (or, for held_msu,
    its open holds) add up to."""

    model_config = ConfigDict(from_attributes=True)
    allocation_id: int
    member_id: int
    column: str
    stored_msu: int
    expected_msu: int
    source: str


class LedgerVerificationOut(BaseModel):
    """Every balance recomputed from the ledger: `drifts` is empty when the books balance."""

    entries: int
    drifts: list[BalanceDriftOut]
