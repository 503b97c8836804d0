"""The footprint of one run (a job, or an array task): measured or estimated, never confused.

*measured*: Slurm's ConsumedEnergyRaw (joules, from the site's AcctGatherEnergyType plugin),
taken only when its counter is node-level and the job had its nodes to itself (it was allocated
every CPU of them): Slurm says node-level counters reflect a job's consumption only for an
exclusive allocation. A RAPL counter (CPU sockets and DRAM) is taken only for CPU-only runs.

*estimated*: Green Algorithms (Lannelongue et al., Adv. Sci. 2021, doi:10.1002/advs.202100707)
on what the run was allocated, at full usage:
    E (kWh) = hours x (cores x W_core + gpus x W_gpu + mem_GiB x W_mem) x PUE / 1000

Both count the facility's overhead (x PUE, the measured counter being IT energy only); carbon is
C (gCO2e) = E x the grid's intensity. *not_estimated*: the partition has no hardware figures
(or none for its GPUs) and nothing was measured: no figure is invented.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from schedulers.config import ClusterConfig, Hardware, PartitionConfig

JOULES_PER_KWH = 3_600_000
MIB_PER_GIB = 1024


class Source(StrEnum):
    measured = "measured"
    estimated = "estimated"
    not_estimated = "not_estimated"


# an array's label is its weakest task's: one estimate makes the sum an estimate
WEAKEST_FIRST = (Source.not_estimated, Source.estimated, Source.measured)


@dataclass(frozen=True)
class Run:
    """What a job or an array task was allocated, how long it ran, what Slurm measured."""

    cpus: int
    gpus: int
    mem_mb: int
    seconds: int
    nodes: int = 1
    measured_joules: float | None = None  # None (or 0): Slurm measured nothing


@dataclass(frozen=True)
class Footprint:
    source: Source
    energy_kwh: float | None
    carbon_g: float | None
    figures: dict[str, Any]  # every input used: how the numbers can be checked


def _carbon(cluster: ClusterConfig) -> dict[str, Any]:
    return {"pue": cluster.pue, "carbon_intensity_g_per_kwh": cluster.carbon_intensity_g_per_kwh,
            "carbon_scope": cluster.carbon_scope, "carbon_year": cluster.carbon_year}


def _done(source: Source, it_kwh: float, figures: dict[str, Any],
          cluster: ClusterConfig) -> Footprint:
    kwh = it_kwh * cluster.pue
    return Footprint(source, kwh, kwh * cluster.carbon_intensity_g_per_kwh,
                     figures | _carbon(cluster))


def measurable(run: Run, hardware: Hardware) -> bool:
    """Whether Slurm's figure is the run's own: measured, by a counter that covers what the
    run used, on nodes it had to itself."""
    return (bool(run.measured_joules) and hardware.cpus_per_node is not None
            and run.cpus >= max(run.nodes, 1) * hardware.cpus_per_node
            and (hardware.energy_counter == "node" or run.gpus == 0))


def footprint(run: Run, partition: PartitionConfig | None, cluster: ClusterConfig) -> Footprint:
    hours = run.seconds / 3600
    mem_gb = run.mem_mb / MIB_PER_GIB
    known: dict[str, Any] = {"cpus": run.cpus, "gpus": run.gpus, "mem_gb": mem_gb,
                             "hours": hours}
    if partition is None or partition.hardware is None:
        return Footprint(Source.not_estimated, None, None,
                         known | {"reason": "the partition has no hardware figures"})
    hardware = partition.hardware
    if run.measured_joules and measurable(run, hardware):
        return _done(Source.measured, run.measured_joules / JOULES_PER_KWH, known | {
            "measured_joules": run.measured_joules, "nodes": run.nodes,
            "cpus_per_node": hardware.cpus_per_node, "energy_counter": hardware.energy_counter,
        }, cluster)
    gpu_watts = cluster.gpu_watts.get(hardware.gpu_model or "")
    if run.gpus and gpu_watts is None:
        return Footprint(Source.not_estimated, None, None,
                         known | {"reason": "no power figure for the partition's GPUs"})
    cores = -(-run.cpus // partition.cpus_per_core)  # Slurm's CPUs are hardware threads
    watts = (cores * hardware.watts_per_core + run.gpus * (gpu_watts or 0.0)
             + mem_gb * hardware.watts_per_gb_mem)
    return _done(Source.estimated, hours * watts / 1000, known | {
        "model": "green-algorithms", "cores": cores, "gpu_model": hardware.gpu_model,
        "watts_per_core": hardware.watts_per_core, "watts_per_gpu": gpu_watts,
        "watts_per_gb_mem": hardware.watts_per_gb_mem,
    }, cluster)


def weakest(sources: list[Source]) -> Source:
    return next((s for s in WEAKEST_FIRST if s in sources), Source.not_estimated)
