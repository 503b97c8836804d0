"""No free compute by omission: a configuration whose partition leaves CPUs or memory unpriced
ends the command with exit 2 and one message; the demo prices every partition."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import demo
from gateway.cli import app
from quotas.rates import Amounts, price

UNPRICED = """
[[clusters]]
name = "laptop"
backend = "local"
[[clusters.partitions]]
name = "cpu"
max_time_minutes = 60
max_cpus_per_job = 4
max_mem_mb_per_job = 4096
billing = {{ cpu = 0.25, mem_gb = 0.0625 }}
[[clusters.partitions]]
name = "gpu"
max_time_minutes = 1440
max_cpus_per_job = 8
max_gpus_per_job = 4
max_mem_mb_per_job = 131072
{gpu_partition}
"""


def _show(runner: CliRunner, tmp_path: Path, gpu_partition: str) -> tuple[int, str, str]:
    config = tmp_path / "hpcgw.toml"
    config.write_text(UNPRICED.format(gpu_partition=gpu_partition))
    result = runner.invoke(app, ["--config", str(config), "config", "show"])
    return result.exit_code, " ".join(result.stderr.split()), result.stdout


def test_a_partition_that_prices_neither_cpus_nor_memory_stops_the_gateway_with_exit_2(
        runner: CliRunner, secret_key: str, tmp_path: Path) -> None:
    code, stderr, _ = _show(runner, tmp_path, "billing = { gpu = 1.0 }")

    assert code == 2
    assert stderr.startswith("error: hpcgw cannot start with this configuration")
    assert ('clusters.0.partitions.1: partition "gpu" gives its CPUs and memory away: '
            "billing.cpu and billing.mem_gb are 0") in stderr
    assert "Traceback" not in stderr


def test_free_cpus_and_memory_said_explicitly_are_accepted(
        runner: CliRunner, secret_key: str, tmp_path: Path) -> None:
    code, stderr, stdout = _show(runner, tmp_path, 'unpriced = ["cpu", "mem_gb"]')

    assert code == 0, stderr
    assert tomllib.loads(stdout)["clusters"][0]["partitions"][1]["unpriced"] == ["cpu", "mem_gb"]


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_the_demo_prices_cpus_and_memory_on_every_partition(tmp_path: Path, name: str) -> None:
    partition = demo.local_cluster(tmp_path).partition(name)
    assert partition is not None and partition.unpriced == ()

    # the partition's whole CPU or memory limit for a day, without a GPU, is not free
    day = 24 * 3600
    whole_cpus = Amounts(gpus=0, cpus=partition.max_cpus_per_job, mem_mb=1024)
    whole_memory = Amounts(gpus=0, cpus=1, mem_mb=partition.max_mem_mb_per_job)
    assert price(partition.billing, whole_cpus, day) > 0
    assert price(partition.billing, whole_memory, day) > 0


def test_the_demos_gpu_partition_charges_a_whole_node_without_gpus_as_its_four_gpus(
        tmp_path: Path) -> None:
    gpu = demo.local_cluster(tmp_path).partition("gpu")
    assert gpu is not None
    day = 24 * 3600

    no_gpu = price(gpu.billing, Amounts(gpus=0, cpus=8, mem_mb=128 * 1024), day)

    assert no_gpu == price(gpu.billing, Amounts(gpus=4, cpus=1, mem_mb=1024), day) == 96_000
