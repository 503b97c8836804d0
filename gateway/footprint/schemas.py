"""What the API and the pages show of footprints: every energy and carbon figure split by label
(measured, estimated), with a label for the whole, so an estimate never passes for a
measurement."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from gateway.footprint.equivalents import SOURCES, Equivalents
from gateway.footprint.model import Source
from gateway.footprint.report import Group, Transparency
from gateway.footprint.totals import Totals
from gateway.footprint.usage import Aggregates, Line
from quotas.schemas import Amount

Label = Literal["measured", "estimated", "partly_measured", "not_estimated"]


def label_of(totals: Totals) -> Label:
    """measured only if nothing in it was estimated; not_estimated if nothing has a figure."""
    measured = totals.jobs_by_source[Source.measured]
    estimated = totals.jobs_by_source[Source.estimated]
    if measured and estimated:
        return "partly_measured"
    if measured:
        return "measured"
    return "estimated" if estimated else "not_estimated"


class Split(BaseModel):
    total: float
    measured: float
    estimated: float


class JobsBySource(BaseModel):
    measured: int
    estimated: int
    not_estimated: int = Field(description="no figure: nothing measured and the partition has "
                                           "no hardware figures")


class EquivalentsOut(BaseModel):
    car_km: float | None = Field(description="km driven by an average new car, same carbon")
    household_hours: float | None = Field(description="hours of a French household's "
                                                      "electricity, same energy")
    sources: dict[str, str]


class FootprintOut(BaseModel):
    label: Label = Field(description="how the figures were obtained: measured by Slurm, "
                                     "estimated (Green Algorithms), or both")
    jobs: int
    jobs_by_source: JobsBySource
    compute: Amount = Field(description="charged minus refunded")
    energy_kwh: Split
    carbon_g: Split = Field(description="gCO2e, in the scope of each cluster's figures")
    equivalents: EquivalentsOut

    @classmethod
    def of(cls, t: Totals) -> FootprintOut:
        kwh, carbon = round(t.energy_kwh, 3), round(t.total_carbon_g, 1)
        equivalents = Equivalents.of(kwh, carbon)
        return cls(
            label=label_of(t), jobs=t.jobs,
            jobs_by_source=JobsBySource(**{s.value: n for s, n in t.jobs_by_source.items()}),
            compute=Amount.of(t.used_msu),
            energy_kwh=Split(total=kwh, measured=round(t.kwh[Source.measured], 3),
                             estimated=round(t.kwh[Source.estimated], 3)),
            carbon_g=Split(total=carbon, measured=round(t.carbon_g[Source.measured], 1),
                           estimated=round(t.carbon_g[Source.estimated], 1)),
            equivalents=EquivalentsOut(
                car_km=_round(equivalents.car_km), sources=SOURCES,
                household_hours=_round(equivalents.household_hours)))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class FootprintLine(BaseModel):
    key: str
    label: str
    footprint: FootprintOut

    @classmethod
    def of(cls, line: Line) -> FootprintLine:
        return cls(key=line.key, label=line.label, footprint=FootprintOut.of(line.totals))


class AggregatesOut(BaseModel):
    since: datetime | None
    until: datetime | None
    total: FootprintOut
    breakdowns: dict[str, list[FootprintLine]] = Field(
        description="member usage: project, user, domain, month; consortium: member, domain, "
                    "kind, month")

    @classmethod
    def of(cls, a: Aggregates) -> AggregatesOut:
        return cls(since=a.since, until=a.until, total=FootprintOut.of(a.total),
                   breakdowns={name: [FootprintLine.of(line) for line in lines]
                               for name, lines in a.breakdowns.items()})


class GroupOut(BaseModel):
    key: str = Field(description='a domain or member kind; "other": the groups folded '
                                 "together (fewer than 3 members, or to protect one)")
    members: int
    projects: int
    footprint: FootprintOut

    @classmethod
    def of(cls, g: Group) -> GroupOut:
        return cls(key=g.key, members=len(g.members), projects=len(g.projects),
                   footprint=FootprintOut.of(g.totals))


class FiguresOut(BaseModel):
    cluster: str
    pue: float
    carbon_intensity_g_per_kwh: float
    carbon_scope: Literal["direct", "lifecycle"]
    carbon_year: int


class TransparencyOut(BaseModel):
    first_month: str = Field(examples=["2026-01"])
    last_month: str = Field(examples=["2026-12"])
    withheld_months: list[str] = Field(description="months in which fewer than 3 members ran "
                                                   "jobs: nothing of them is shown")
    members_in_consortium: int
    members: int = Field(description="members with jobs in the months shown")
    projects: int
    total: GroupOut
    by_domain: list[GroupOut]
    by_kind: list[GroupOut]
    figures: list[FiguresOut]

    @classmethod
    def of(cls, r: Transparency) -> TransparencyOut:
        return cls(
            first_month=r.first_month, last_month=r.last_month,
            withheld_months=r.withheld_months, members_in_consortium=r.members_in_consortium,
            members=len(r.total.members), projects=len(r.total.projects),
            total=GroupOut.of(r.total), by_domain=[GroupOut.of(g) for g in r.by_domain],
            by_kind=[GroupOut.of(g) for g in r.by_kind],
            figures=[FiguresOut(cluster=c.name, pue=c.pue,
                                carbon_intensity_g_per_kwh=c.carbon_intensity_g_per_kwh,
                                carbon_scope=c.carbon_scope, carbon_year=c.carbon_year)
                     for c in r.figures])


CSV_COLUMNS = ("section", "key", "label", "figures", "jobs", "jobs_measured", "jobs_estimated",
               "jobs_not_estimated", "compute_su", "energy_kwh", "energy_kwh_measured",
               "energy_kwh_estimated", "carbon_g", "carbon_g_measured", "carbon_g_estimated")


def csv_row(section: str, key: str, label: str, f: FootprintOut) -> list[object]:
    """One CSV line: `figures` is the label (measured, estimated, partly_measured...)."""
    return [section, key, label, f.label, f.jobs, f.jobs_by_source.measured,
            f.jobs_by_source.estimated, f.jobs_by_source.not_estimated, f.compute.su,
            f.energy_kwh.total, f.energy_kwh.measured, f.energy_kwh.estimated,
            f.carbon_g.total, f.carbon_g.measured, f.carbon_g.estimated]


def aggregates_csv(a: AggregatesOut) -> Iterator[Sequence[object]]:
    yield CSV_COLUMNS
    yield csv_row("total", "", "", a.total)
    for section, lines in a.breakdowns.items():
        for line in lines:
            yield csv_row(section, line.key, line.label, line.footprint)


def transparency_csv(r: TransparencyOut) -> Iterator[Sequence[object]]:
    yield (*CSV_COLUMNS, "members", "projects")
    for section, groups in (("total", [r.total]), ("domain", r.by_domain),
                            ("kind", r.by_kind)):
        for g in groups:
            yield (*csv_row(section, g.key, g.key, g.footprint), g.members, g.projects)
