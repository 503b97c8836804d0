"""The footprint of one run: Green Algorithms' estimate to the watt-hour, what counts as
measured, and no figure invented for a partition without hardware figures."""

from __future__ import annotations

import pytest
from footprint_helpers import NODE, cluster, partition

from gateway.footprint.model import Run, Source, footprint
from schedulers.config import Hardware

TEN_HOURS = 10 * 3600
GIB = 1024


def test_four_h100_for_ten_hours_is_51158_wh_at_pue_1_56() -> None:
    h100 = partition(hardware=Hardware(watts_per_core=12.0, gpu_model="h100-sxm5"))

    found = footprint(Run(cpus=32, gpus=4, mem_mb=256 * GIB, seconds=TEN_HOURS), h100,
                      cluster(h100))

    # (32 x 12 + 4 x 700 + 256 x 0.3725) W x 10 h x 1.56 = 51 158.016 Wh
    assert found.source is Source.estimated
    assert found.energy_kwh is not None and found.carbon_g is not None
    assert round(found.energy_kwh * 1000) == 51158
    assert round(found.carbon_g, 1) == round(51.158016 * 21.7, 1)  # 1110.1 g at 21.7 g/kWh
    assert found.figures == {
        "model": "green-algorithms", "cpus": 32, "cores": 32, "gpus": 4, "gpu_model": "h100-sxm5",
        "mem_gb": 256.0, "hours": 10.0, "watts_per_core": 12.0, "watts_per_gpu": 700.0,
        "watts_per_gb_mem": 0.3725, "pue": 1.56, "carbon_intensity_g_per_kwh": 21.7,
        "carbon_scope": "direct", "carbon_year": 2024}


def test_hardware_threads_are_counted_as_cores() -> None:
    smt = partition(hardware=NODE, cpus_per_core=2)

    found = footprint(Run(cpus=3, gpus=1, mem_mb=6 * GIB, seconds=5400), smt, cluster(smt))

    # 3 CPUs are 2 whole cores: (2 x 12 + 400 + 6 x 0.3725) W x 1.5 h x 1.56 = 997.3899 Wh
    assert found.energy_kwh is not None
    assert round(found.energy_kwh * 1000) == 997
    assert found.figures["cores"] == 2


def test_a_partition_without_hardware_figures_is_not_estimated() -> None:
    bare = partition()

    found = footprint(Run(cpus=4, gpus=0, mem_mb=GIB, seconds=3600, measured_joules=3.6e6),
                      bare, cluster(bare))

    assert (found.source, found.energy_kwh, found.carbon_g) == (Source.not_estimated, None, None)
    assert found.figures["reason"] == "the partition has no hardware figures"


def test_gpus_of_no_known_model_are_not_estimated_but_a_cpu_job_there_is() -> None:
    nameless = partition(hardware=Hardware(watts_per_core=10.0))
    config = cluster(nameless)

    gpu_job = footprint(Run(cpus=1, gpus=1, mem_mb=GIB, seconds=3600), nameless, config)
    cpu_job = footprint(Run(cpus=1, gpus=0, mem_mb=GIB, seconds=3600), nameless, config)

    assert gpu_job.source is Source.not_estimated
    assert cpu_job.source is Source.estimated


def test_slurms_energy_counts_only_for_nodes_the_job_had_to_itself() -> None:
    node = partition(hardware=NODE)
    config = cluster(node)
    whole = Run(cpus=4, gpus=2, mem_mb=4000, seconds=3600, nodes=1, measured_joules=1_800_000)
    shared = Run(cpus=1, gpus=0, mem_mb=1000, seconds=3600, nodes=1, measured_joules=1_800_000)
    two_nodes_half = Run(cpus=4, gpus=0, mem_mb=4000, seconds=3600, nodes=2,
                         measured_joules=1_800_000)

    measured = footprint(whole, node, config)

    assert measured.source is Source.measured
    assert measured.energy_kwh == pytest.approx(0.5 * 1.56)  # 1.8 MJ at the node, x PUE
    assert measured.figures["measured_joules"] == 1_800_000
    assert footprint(shared, node, config).source is Source.estimated
    assert footprint(two_nodes_half, node, config).source is Source.estimated


def test_a_cpu_and_memory_counter_is_not_taken_for_a_gpu_job() -> None:
    rapl = partition(hardware=NODE.model_copy(update={"energy_counter": "cpu_memory"}))
    config = cluster(rapl)

    gpu_job = footprint(Run(cpus=4, gpus=2, mem_mb=4000, seconds=3600, measured_joules=1e6),
                        rapl, config)
    cpu_job = footprint(Run(cpus=4, gpus=0, mem_mb=4000, seconds=3600, measured_joules=1e6),
                        rapl, config)

    assert gpu_job.source is Source.estimated  # RAPL misses the GPUs' 800 W
    assert cpu_job.source is Source.measured


def test_a_gpu_model_missing_from_the_table_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="gpu_model b200 has no figure in gpu_watts"):
        cluster(partition(hardware=Hardware(watts_per_core=12.0, gpu_model="b200")))
