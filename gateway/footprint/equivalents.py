"""Everyday equivalents of an energy and a carbon figure, with where their factors come from
(docs/sustainability.md cites them in full). They inherit the figure's label: the equivalent of
an estimate is an estimate."""

from __future__ import annotations

from dataclasses import dataclass

# EEA, "CO2 emissions from new passenger cars" (2023 registrations, WLTP): about 106 gCO2/km
# at the tailpipe, the official figure (driving on the road emits more)
CAR_G_PER_KM = 106.0
CAR_SOURCE = "EEA, average new car registered in the EU in 2023 (WLTP), 106 gCO2/km"
# a French household uses about 4,800 kWh of electricity a year: Agence ORE's 2,223 kWh per
# inhabitant times INSEE's 2.16 persons per household
HOUSEHOLD_KWH_PER_YEAR = 4800.0
HOUSEHOLD_SOURCE = ("Agence ORE (2,223 kWh a year per inhabitant) x INSEE (2.16 persons per "
                    "household): 4,800 kWh a year")
HOURS_PER_YEAR = 8766  # 365.25 days


@dataclass(frozen=True)
class Equivalents:
    car_km: float | None  # km driven by an average new car for the same carbon
    household_hours: float | None  # hours of a French household's electricity

    @classmethod
    def of(cls, energy_kwh: float | None, carbon_g: float | None) -> Equivalents:
        return cls(
            car_km=None if carbon_g is None else carbon_g / CAR_G_PER_KM,
            household_hours=(None if energy_kwh is None
                             else energy_kwh / HOUSEHOLD_KWH_PER_YEAR * HOURS_PER_YEAR))


SOURCES = {"car_km": CAR_SOURCE, "household_hours": HOUSEHOLD_SOURCE}
