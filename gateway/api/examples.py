"""Examples of the main requests and responses, shown in /docs and in the OpenAPI document
(tests/api/test_openapi_clients.py checks each against its model)."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

SCRIPT = ("#!/bin/bash\n#SBATCH --job-name=train-occitan\n#SBATCH --partition=gpu\n"
          "#SBATCH --gpus=2\n#SBATCH --mem=32G\n#SBATCH --time=04:00:00\n"
          "srun python train.py --epochs 20\n")

JOB_CREATE: dict[str, Example] = {
    "script": Example(
        summary="A script: its #SBATCH lines give the resources",
        value={"project": "lirmm-ai/llm-occitan", "script": SCRIPT,
               "environment": {"HF_HOME": "cache/hf"}, "workdir": "occitan"}),
    "script-overridden": Example(
        summary="A script with resources given in the request (they win over #SBATCH)",
        value={"project": "lirmm-ai/llm-occitan", "script": SCRIPT,
               "resources": {"gpus": 1, "time_limit_minutes": 60}}),
    "template": Example(
        summary="An approved template with its parameters",
        value={"project": "lirmm-ai/llm-occitan", "template": "pytorch-cpu",
               "parameters": {"epochs": 5},
               "resources": {"partition": "cpu", "mem_mb": 4096, "time_limit_minutes": 30}}),
}

_AT = "2026-03-02T09:15:00Z"
JOB_DETAIL: dict[str, Any] = {
    "id": "3f9c2a71b0de", "name": "train-occitan", "state": "running", "cluster": "montpellier",
    "member_id": 2, "project_id": 5, "user_id": 7, "scheduler_id": "48213",
    "marker": "hpcgw:montpellier:3f9c2a71b0de",
    "resources": {"partition": "gpu", "nodes": 1, "ntasks": 1, "cpus_per_task": 1, "gpus": 2,
                  "mem_mb": 32768, "time_limit_minutes": 240, "array": None},
    "template": None, "parameters": None, "environment": {"HF_HOME": "cache/hf"},
    "workdir": "occitan", "stdout_path": "occitan/hpcgw-3f9c2a71b0de.out",
    "stderr_path": "occitan/hpcgw-3f9c2a71b0de.err", "quote_msu": 8000, "charge_msu": None,
    "refund_msu": None, "created_at": _AT, "submitted_at": _AT,
    "started_at": "2026-03-02T09:16:02Z", "ended_at": None, "elapsed_seconds": None,
    "exit_code": None, "signal": None, "pending_reason": None, "pending_reason_text": None,
    "detail": None, "wait_until": None, "cancel_requested": False,
    "allocated": {"nodes": 1, "cpus": 1, "gpus": 2, "mem_mb": 32768, "node_list": "gpu01"},
    "energy": {"kwh": None, "source": None, "carbon_g": None}, "array": None, "tasks": None,
    "script": SCRIPT,
    "events": [
        {"id": 101, "at": _AT, "from_state": None, "to_state": "accepted", "detail": None},
        {"id": 102, "at": _AT, "from_state": "accepted", "to_state": "submitting",
         "detail": None},
        {"id": 103, "at": _AT, "from_state": "submitting", "to_state": "pending",
         "detail": "slurm id 48213"},
        {"id": 104, "at": "2026-03-02T09:16:02Z", "from_state": "pending",
         "to_state": "running", "detail": None},
    ],
    "array_tasks": [],
}

JOB_QUOTE: dict[str, Any] = {
    "cluster": "montpellier", "partition": "gpu", "resources": JOB_DETAIL["resources"],
    "tasks": 1, "rate_msu_per_hour": 2000, "quote_msu": 8000, "available_msu": 125000,
    "fits": True, "message": None,
}


def json_example(value: dict[str, Any]) -> dict[str, Any]:
    """A `responses=` entry's content with this example."""
    return {"content": {"application/json": {"example": value}}}
