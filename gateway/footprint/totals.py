"""Additive footprint figures of a set of jobs, kept apart by label: a sum never mixes what was
measured with what was estimated without saying how much of each."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.footprint.model import Source


@dataclass
class Totals:
    jobs: int = 0
    used_msu: int = 0  # charged minus refunded
    jobs_by_source: dict[Source, int] = field(
        default_factory=lambda: dict.fromkeys(Source, 0))
    kwh: dict[Source, float] = field(
        default_factory=lambda: {Source.measured: 0.0, Source.estimated: 0.0})
    carbon_g: dict[Source, float] = field(
        default_factory=lambda: {Source.measured: 0.0, Source.estimated: 0.0})

    def add(self, source: Source, *, jobs: int, used_msu: int, kwh: float,
            carbon_g: float) -> None:
        self.jobs += jobs
        self.used_msu += used_msu
        self.jobs_by_source[source] += jobs
        if source is not Source.not_estimated:
            self.kwh[source] += kwh
            self.carbon_g[source] += carbon_g

    def merge(self, other: Totals) -> None:
        self.jobs += other.jobs
        self.used_msu += other.used_msu
        for source, count in other.jobs_by_source.items():
            self.jobs_by_source[source] += count
        for source in self.kwh:
            self.kwh[source] += other.kwh[source]
            self.carbon_g[source] += other.carbon_g[source]

    @property
    def energy_kwh(self) -> float:
        return sum(self.kwh.values())

    @property
    def total_carbon_g(self) -> float:
        return sum(self.carbon_g.values())
