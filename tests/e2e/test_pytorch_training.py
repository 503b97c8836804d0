"""A real AI workload end to end (issue 5, item 8): a member submits the `pytorch-cpu` template
through the API; Slurm runs it on the test cluster with PyTorch 2.13.0 on CPU
(scripts/torch-env.sh); the job's events are followed to `completed`, its log read, its
checkpoint downloaded and loaded, and its charge compared with Slurm's own accounting."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import uuid
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2e_helpers import (
    PARTITION,
    TORCH_PYTHON,
    World,
    charges,
    hold_state,
    mem_mb,
    slurm_accounting,
    slurm_jobs_with_marker,
    sse_events,
)
from factories import auth_headers
from fastapi.testclient import TestClient

from gateway.db import Database
from gateway.settings import Settings
from quotas.models import HoldState
from quotas.rates import Amounts, price, rate_per_hour

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

pytestmark = pytest.mark.slurm

EPOCHS = 6
LOSS = re.compile(r"^epoch=(\d+) loss=([0-9.]+)$")


def test_pytorch_template_trains_on_the_cluster_and_is_charged_what_slurm_accounted(
        *, gateway: TestClient, world: World, settings: Settings, fresh_database: Database,
        testcluster: Cluster, tmp_path: Path) -> None:
    alice = auth_headers(settings, world.alice)
    body = {
        "project": world.alpha_project.id, "name": "tiny-regression",
        "template": "pytorch-cpu",
        "parameters": {"python": TORCH_PYTHON, "epochs": EPOCHS, "samples": 1024,
                       "checkpoint": "model/checkpoint.pt"},
        "resources": {"partition": PARTITION, "cpus_per_task": 2, "mem_mb": 2048,
                      "time_limit_minutes": 10},
        "workdir": f"e2e/torch-{uuid.uuid4().hex[:8]}",
    }

    answer = gateway.post("/api/v1/jobs", headers=alice, json=body)

    assert answer.status_code == 201, answer.text
    submitted = answer.json()
    public_id = submitted["id"]
    assert submitted["state"] == "pending" and submitted["scheduler_id"]

    # the events, as a client following them sees them: the stream ends after the last one
    stream = gateway.get(f"/api/v1/jobs/{public_id}/events", headers=alice)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    states = [data["to_state"] for event, data in sse_events(stream.text) if event == "state"]
    assert states[:3] == ["accepted", "submitting", "pending"]
    assert states[-1] == "completed", states

    job = gateway.get(f"/api/v1/jobs/{public_id}", headers=alice).json()
    assert job["exit_code"] == 0

    # the log: one falling loss per epoch, then the checkpoint's summary
    log = gateway.get(f"/api/v1/jobs/{public_id}/output", headers=alice).json()
    assert log["complete"] is True
    lines = log["data"].splitlines()
    assert lines[0].startswith("training: 1024 samples, 6 epochs, torch 2.13.0"), lines
    losses = [float(m[2]) for m in map(LOSS.match, lines) if m]
    assert len(losses) == EPOCHS
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert losses[-1] < losses[0] / 2
    summary = json.loads(lines[-1])
    assert summary["checkpoint"] == "model/checkpoint.pt"

    # the checkpoint: a torch zip archive that torch loads, with what the log said
    checkpoint = gateway.get(f"/api/v1/jobs/{public_id}/files/model/checkpoint.pt",
                             headers=alice)
    assert checkpoint.status_code == 200
    assert checkpoint.content[:2] == b"PK"
    saved = tmp_path / "checkpoint.pt"
    saved.write_bytes(checkpoint.content)
    loaded = subprocess.run(
        [TORCH_PYTHON, "-c", "import json, sys, torch; c = torch.load(sys.argv[1], "
         "weights_only=True); print(json.dumps({'epochs': c['epochs'], 'loss': c['loss'], "
         "'tensors': sorted(c['model'])}))", str(saved)],
        capture_output=True, text=True, timeout=60, check=True)
    content = json.loads(loaded.stdout)
    assert content["epochs"] == EPOCHS
    assert math.isclose(content["loss"], summary["final_loss"])
    assert "0.weight" in content["tensors"]
    # another member cannot read it
    other = gateway.get(f"/api/v1/jobs/{public_id}/files/model/checkpoint.pt",
                        headers=auth_headers(settings, world.bob))
    assert other.status_code == 404

    # the charge: rate(allocated) x elapsed, both from Slurm's accounting, priced with the
    # partition's weights; Slurm's own billing TRES is the same rate in milli-SU per hour
    accounted = slurm_accounting(testcluster, job["scheduler_id"])
    assert accounted.state == "COMPLETED"
    allocated = Amounts(gpus=0, cpus=int(accounted.alloc_tres["cpu"]),
                        mem_mb=mem_mb(accounted.alloc_tres["mem"]))
    assert allocated == Amounts(gpus=0, cpus=2, mem_mb=2048)
    config = settings.clusters[0]
    weights = config.partitions[0].billing
    assert config.partitions[0].name == PARTITION
    rate = rate_per_hour(weights, allocated)
    assert Fraction(accounted.alloc_tres["billing"]) == rate * config.slurm_billing_scale
    assert accounted.elapsed_seconds >= 1
    expected = price(weights, allocated, accounted.elapsed_seconds)
    assert expected == math.ceil(rate * 1000 * accounted.elapsed_seconds / 3600)
    assert job["elapsed_seconds"] == accounted.elapsed_seconds
    assert job["charge_msu"] == expected
    assert job["allocated"]["cpus"] == 2 and job["allocated"]["mem_mb"] == 2048
    assert charges(fresh_database, public_id) == [expected]
    assert hold_state(fresh_database, public_id) == HoldState.settled
    assert slurm_jobs_with_marker(testcluster, job["marker"]) == {job["scheduler_id"]}
