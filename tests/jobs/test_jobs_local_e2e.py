"""End to end on the real local executor: the API submits, real processes run, the tracker
follows them to the end, the output is read back and the charge is rate x elapsed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from factories import auth_headers
from jobs_helpers import CLUSTER, CPU_WEIGHTS, World, job_body
from sqlalchemy.orm import Session

from gateway.api.app import create_app
from gateway.db import Database
from gateway.jobs.clusters import Cluster
from gateway.jobs.templates import seed_templates
from gateway.jobs.tracker import ClusterTracker
from gateway.settings import Settings
from quotas.rates import Amounts, price
from schedulers.config import ClusterConfig
from schedulers.local import LocalScheduler

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def local(config: ClusterConfig) -> AsyncIterator[LocalScheduler]:
    scheduler = LocalScheduler(config, kill_grace_seconds=0.5)
    yield scheduler
    await scheduler.close()


class Api:
    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str],
                 tracker: ClusterTracker) -> None:
        self.client, self.headers, self.tracker = client, headers, tracker

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, url, headers=self.headers, **kwargs)

    async def until_ended(self, public_id: str, within: float = 60.0) -> dict[str, Any]:
        """Tracker cycles until the job has ended (bounded)."""
        with anyio.fail_after(within):
            while True:
                await self.tracker.cycle()
                job: dict[str, Any] = (await self.call("GET", f"/api/v1/jobs/{public_id}")).json()
                if job["state"] not in ("accepted", "submitting", "pending", "running"):
                    return job
                await anyio.sleep(0.1)


@pytest.fixture
async def api(settings: Settings, database: Database, local: LocalScheduler, world: World,
              session: Session) -> AsyncIterator[Api]:
    seed_templates(session)
    session.flush()
    app = create_app(settings, database=database, schedulers={CLUSTER: local})
    tracker = ClusterTracker(database, Cluster(local.config, local), settings.jobs, holder="e2e")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(client, auth_headers(settings, world.researcher), tracker)


SCRIPT = """#!/bin/bash
echo "hello from job $SLURM_JOB_ID in $(basename "$PWD")"
sleep 1
echo "to stderr" >&2
"""


async def test_a_script_runs_to_completion_and_is_charged_rate_times_elapsed(
        api: Api, world: World) -> None:
    answer = await api.call("POST", "/api/v1/jobs",
                            json=job_body(world.project, script=SCRIPT, workdir="runs/hello"))
    assert answer.status_code == 201, answer.text
    public_id = answer.json()["id"]
    job = await api.until_ended(public_id)
    assert job["state"] == "completed" and job["exit_code"] == 0, job
    out = (await api.call("GET", f"/api/v1/jobs/{public_id}/output")).json()
    assert out["data"] == f"hello from job {job['scheduler_id']} in hello\n"
    assert out["complete"] is True
    err = (await api.call("GET", f"/api/v1/jobs/{public_id}/output?stream=stderr")).json()
    assert err["data"] == "to stderr\n"
    allocated = job["allocated"]
    assert job["elapsed_seconds"] >= 1
    assert job["charge_msu"] == price(
        CPU_WEIGHTS, Amounts(gpus=allocated["gpus"], cpus=allocated["cpus"],
                             mem_mb=allocated["mem_mb"]), job["elapsed_seconds"]) > 0
    assert [e["to_state"] for e in job["events"]] == [
        "accepted", "submitting", "pending", "running", "completed"]


async def test_a_running_job_is_cancelled_and_charged_for_what_it_ran(
        api: Api, world: World) -> None:
    body = job_body(world.project, script="#!/bin/bash\necho started\nsleep 60\n")
    public_id = (await api.call("POST", "/api/v1/jobs", json=body)).json()["id"]
    with anyio.fail_after(30):
        while True:
            await api.tracker.cycle()
            job = (await api.call("GET", f"/api/v1/jobs/{public_id}")).json()
            if job["state"] == "running":
                break
            await anyio.sleep(0.1)
    cancel = await api.call("POST", f"/api/v1/jobs/{public_id}/cancel")
    assert cancel.status_code == 202
    job = await api.until_ended(public_id)
    assert job["state"] == "cancelled" and job["elapsed_seconds"] < 30
    assert job["charge_msu"] is not None and job["charge_msu"] < job["quote_msu"]


def _has_torch(python: str) -> bool:
    if python == sys.executable:
        return importlib.util.find_spec("torch") is not None
    return subprocess.run([python, "-c", "import torch"], capture_output=True,
                          check=False).returncode == 0


async def test_the_pytorch_cpu_template_trains_or_says_torch_is_missing(
        api: Api, world: World) -> None:
    """With an interpreter that has torch the loss falls and a checkpoint is saved; without,
    the job fails at once with a message saying what to do (the demo's two cases).
    HPCGW_TEST_TORCH_PYTHON names the interpreter (default: the one running the tests)."""
    python = os.environ.get("HPCGW_TEST_TORCH_PYTHON", sys.executable)
    body = job_body(world.project, script=None, template="pytorch-cpu", workdir="torch",
                    parameters={"epochs": 3, "samples": 256, "python": python})
    answer = await api.call("POST", "/api/v1/jobs", json=body)
    assert answer.status_code == 201, answer.text
    public_id = answer.json()["id"]
    job = await api.until_ended(public_id, within=120)
    out = (await api.call("GET", f"/api/v1/jobs/{public_id}/output")).json()["data"]
    err = (await api.call("GET", f"/api/v1/jobs/{public_id}/output?stream=stderr")).json()
    if _has_torch(python):
        assert job["state"] == "completed", err
        losses = [float(line.split("loss=")[1]) for line in out.splitlines()
                  if line.startswith("epoch=")]
        assert len(losses) == 3 and losses[-1] < losses[0]
        checkpoint = await api.call("GET", f"/api/v1/jobs/{public_id}/files/checkpoint.pt")
        assert checkpoint.status_code == 200 and len(checkpoint.content) > 1000
    else:
        assert job["state"] == "failed" and job["exit_code"] == 3
        assert "PyTorch cannot be imported" in err["data"]


def test_the_seeded_training_script_is_valid_python() -> None:
    source = Path(__file__).parents[2] / "gateway/jobs/template_files/train_cpu.py"
    compile(source.read_text(), str(source), "exec")
