"""GPU jobs on the test cluster, through the API: its node has 4 GPUs that Slurm schedules and
accounts (scripts/testcluster.sh: gres/gpu, TRESBillingWeights GRES/gpu=1000 milli-SU). A GPU
job's quote, Slurm's allocation and billing, and the charge agree; a request beyond the
partition's GPUs is refused before anything reaches Slurm."""

from __future__ import annotations

import math
import uuid
from fractions import Fraction
from typing import TYPE_CHECKING

import pytest
from e2e_helpers import (
    PARTITION,
    World,
    charges,
    hold_state,
    mem_mb,
    open_holds,
    script_job,
    slurm_accounting,
    slurm_jobs_with_marker,
    until_ended,
)
from factories import auth_headers
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.db import Database
from gateway.jobs.models import Job
from gateway.settings import Settings
from quotas.models import HoldState
from quotas.rates import Amounts, price, rate_per_hour
from schedulers.base import JOB_NAME_PREFIX
from schedulers.config import PartitionConfig

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

JOBS = "/api/v1/jobs"
GPUS = 2
TIME_LIMIT_MINUTES = 5


def _partition(settings: Settings) -> PartitionConfig:
    partition = settings.clusters[0].partition(PARTITION)
    assert partition is not None
    return partition


def test_a_gpu_jobs_quote_slurms_allocation_and_billing_and_its_charge_agree(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster) -> None:
    partition, scale = _partition(settings), settings.clusters[0].slurm_billing_scale
    weights = partition.billing
    alice = auth_headers(settings, world.alice)
    body = script_job(world.alpha_project,
                      "#!/bin/bash\necho \"gpus=$CUDA_VISIBLE_DEVICES\"\nsleep 2\n",
                      name="gpu-pair", time_limit_minutes=TIME_LIMIT_MINUTES, gpus=GPUS)
    requested = Amounts(gpus=GPUS, cpus=1, mem_mb=body["resources"]["mem_mb"])

    answer = gateway.post(JOBS, headers=alice, json=body)

    assert answer.status_code == 201, answer.text
    submitted = answer.json()
    assert submitted["resources"]["gpus"] == GPUS
    # the quote: rate x time limit, the rate the largest weighted share (here the GPUs')
    rate = max(GPUS * Fraction(str(weights.gpu)), 1 * Fraction(str(weights.cpu)),
               Fraction(requested.mem_mb, 1024) * Fraction(str(weights.mem_gb)))
    assert rate == GPUS * Fraction(str(weights.gpu)) == rate_per_hour(weights, requested)
    assert submitted["quote_msu"] == math.ceil(rate * 1000 * TIME_LIMIT_MINUTES / 60) == 167

    job = until_ended(gateway, alice, submitted["id"])
    assert job["state"] == "completed", job
    # Slurm handed out two distinct GPUs of the node (indices in its gres.conf)
    log = gateway.get(f"{JOBS}/{job['id']}/output", headers=alice).json()
    assert log["data"].startswith("gpus="), log
    indices = {int(i) for i in log["data"].removeprefix("gpus=").split(",")}
    assert len(indices) == GPUS and indices <= set(range(int(testcluster["GPUS"]))), log

    # Slurm's allocation and billing: gres/gpu=2, billing = the same rate in milli-SU per hour
    accounted = slurm_accounting(testcluster, job["scheduler_id"])
    assert accounted.state == "COMPLETED"
    assert accounted.alloc_tres["gres/gpu"] == str(GPUS)
    allocated = Amounts(gpus=int(accounted.alloc_tres["gres/gpu"]),
                        cpus=int(accounted.alloc_tres["cpu"]),
                        mem_mb=mem_mb(accounted.alloc_tres["mem"]))
    assert allocated == requested
    assert Fraction(accounted.alloc_tres["billing"]) == rate * scale == 2000

    # the charge: that rate x Slurm's elapsed time, as the gateway settled it
    assert job["allocated"]["gpus"] == GPUS
    assert job["elapsed_seconds"] == accounted.elapsed_seconds >= 1
    expected = price(weights, allocated, accounted.elapsed_seconds)
    assert expected == math.ceil(Fraction(accounted.alloc_tres["billing"])
                                 * accounted.elapsed_seconds / 3600)
    assert job["charge_msu"] == expected
    assert charges(fresh_database, job["id"]) == [expected]
    assert hold_state(fresh_database, job["id"]) == HoldState.settled
    assert slurm_jobs_with_marker(testcluster, job["marker"]) == {job["scheduler_id"]}


def test_more_gpus_than_the_partition_has_is_a_422_that_never_reaches_slurm(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster) -> None:
    partition = _partition(settings)
    assert partition.max_gpus_per_job == int(testcluster["GPUS"])  # the node's GPUs
    name = f"too-many-gpus-{uuid.uuid4().hex[:8]}"
    body = script_job(world.alpha_project, "#!/bin/bash\ntrue\n", name=name,
                      gpus=partition.max_gpus_per_job + 1)

    answer = gateway.post(JOBS, headers=auth_headers(settings, world.alice), json=body)

    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert [e["loc"] for e in problem["errors"]] == [["body", "resources", "gpus"]]
    assert f"at most {partition.max_gpus_per_job} GPU(s)" in problem["errors"][0]["msg"]
    with fresh_database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert open_holds(fresh_database) == 0
    # nothing by that name in the controller's queue or in the accounting
    found = testcluster.shell(
        "ADMIN", f"squeue -a --noheader --states=all --name={JOB_NAME_PREFIX}{name} -o %i; "
                 f"sacct -a -X -n -P --starttime=now-1hours --name={JOB_NAME_PREFIX}{name} "
                 "-o JobIDRaw")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == []
