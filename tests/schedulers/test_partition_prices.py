"""A partition prices every resource it offers, or says in `unpriced` which ones are free:
under MAX_TRES a weight left at 0 lets a job take all of that resource for the others' price."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schedulers.config import BillingWeights, ClusterConfig, PartitionConfig

ROOT = Path(__file__).resolve().parents[2]
PRICED = BillingWeights(gpu=1.0, cpu=0.25, mem_gb=0.0625)


def partition(**changes: Any) -> PartitionConfig:
    values: dict[str, Any] = {"name": "gpu", "max_time_minutes": 60, "max_cpus_per_job": 8,
                              "max_mem_mb_per_job": 8192, "billing": PRICED}
    return PartitionConfig(**(values | changes))


def refusal(**changes: Any) -> str:
    with pytest.raises(ValidationError) as refused:
        partition(**changes)
    return str(refused.value)


def test_default_weights_are_refused_naming_the_partition_and_both_settings() -> None:
    message = refusal(billing=BillingWeights())
    assert 'partition "gpu" gives its CPUs and memory away' in message
    assert "billing.cpu and billing.mem_gb are 0" in message
    assert 'unpriced = ["cpu", "mem_gb"]' in message


@pytest.mark.parametrize(("weights", "setting"), [
    ({"cpu": 0.0}, "billing.cpu is 0"),
    ({"mem_gb": 0.0}, "billing.mem_gb is 0"),
])
def test_one_free_resource_is_refused(weights: dict[str, float], setting: str) -> None:
    assert setting in refusal(billing=PRICED.model_copy(update=weights))


def test_a_partition_with_gpus_must_price_them() -> None:
    message = refusal(max_gpus_per_job=2, billing=PRICED.model_copy(update={"gpu": 0.0}))
    assert 'partition "gpu" gives its GPUs away: billing.gpu is 0' in message


def test_a_partition_without_gpus_may_leave_their_weight_at_0() -> None:
    assert partition(billing=PRICED.model_copy(update={"gpu": 0.0})).billing.gpu == 0


def test_free_resources_are_accepted_when_the_configuration_says_so() -> None:
    free = partition(billing=BillingWeights(), unpriced=("cpu", "mem_gb"))
    assert free.unpriced == ("cpu", "mem_gb")


def test_a_resource_both_priced_and_unpriced_is_refused() -> None:
    assert 'lists ["cpu"] in unpriced but gives a non-zero' in refusal(unpriced=("cpu",))


def test_an_unknown_resource_in_unpriced_is_refused() -> None:
    assert "unpriced.0" in refusal(unpriced=("disk",))


@pytest.mark.parametrize("example", sorted((ROOT / "docs/examples").glob("*.toml")),
                         ids=lambda path: path.name)
def test_the_documented_examples_price_every_partition(example: Path) -> None:
    for cluster in tomllib.loads(example.read_text())["clusters"]:
        for p in ClusterConfig(**cluster).partitions:
            assert p.unpriced == ()
            assert min(p.billing.cpu, p.billing.mem_gb) > 0
            assert p.billing.gpu > 0 or p.max_gpus_per_job == 0


@pytest.mark.parametrize(("cpus_per_core", "cpus", "priced"), [
    (1, 1, 1), (1, 3, 3), (2, 1, 2), (2, 3, 4), (2, 4, 4), (4, 5, 8),
])
def test_cpus_are_priced_as_the_partitions_whole_cores(cpus_per_core: int, cpus: int,
                                                        priced: int) -> None:
    from gateway.jobs.admission import amounts_of
    from gateway.jobs.schemas import ResourcesIn

    cores = partition(cpus_per_core=cpus_per_core)
    assert cores.allocated_cpus(cpus) == priced
    res = ResourcesIn(partition="gpu", cpus_per_task=cpus, mem_mb=1024, time_limit_minutes=60)
    assert amounts_of(res, cores).cpus == priced
