"""POST /api/v1/jobs/quote: the request resolved and checked as a submission is, priced, and
set against the member's quota and job cap; nothing written, nothing sent to the cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from httpx import Response
from jobs_helpers import CLUSTER, World, job_body, submit
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.models import User
from gateway.jobs.models import Job
from quotas.models import Hold

Headers = Callable[[User], dict[str, str]]
SCRIPT = ("#!/bin/bash\n#SBATCH --partition=cpu\n#SBATCH --cpus-per-task=4\n#SBATCH --mem=2G\n"
          "#SBATCH --time=01:00:00\n#SBATCH --array=0-2\npython train.py\n")


def quote(client: TestClient, headers: dict[str, str], project: Any, **changes: Any) -> Response:
    return client.post("/api/v1/jobs/quote", headers=headers, json=job_body(project, **changes))


def count(session: Session, model: type[Job] | type[Hold]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_quote_resolves_the_scripts_directives_as_the_submission_does_and_writes_nothing(
        client: TestClient, world: World, as_: Headers, session: Session,
        fake: FakeScheduler) -> None:
    answer = quote(client, as_(world.researcher), world.project, script=SCRIPT, resources=None)

    assert answer.status_code == 200, answer.text
    # cpu partition: max(4 CPUs x 0.25, 2 GB x 0.0625) = 1 SU an hour, 1 hour, 3 tasks
    assert answer.json() == {
        "cluster": CLUSTER, "partition": "cpu",
        "resources": {"partition": "cpu", "nodes": 1, "ntasks": 1, "cpus_per_task": 4,
                      "gpus": 0, "mem_mb": 2048, "time_limit_minutes": 60, "array": "0-2"},
        "tasks": 3, "rate_msu_per_hour": 1000, "quote_msu": 3000, "available_msu": 10_000,
        "fits": True, "message": None}
    assert (count(session, Job), count(session, Hold), sum(fake.calls.values())) == (0, 0, 0)
    job = submit(client, as_(world.researcher), world.project, script=SCRIPT, resources=None)
    assert (job.json()["quote_msu"], job.json()["resources"]) == (
        3000, answer.json()["resources"])


def test_a_quote_over_the_quota_does_not_fit_and_says_why(
        client: TestClient, world: World, as_: Headers) -> None:
    big = {"partition": "gpu", "gpus": 2, "mem_mb": 1024, "time_limit_minutes": 240}
    assert submit(client, as_(world.researcher), world.project, resources=big).status_code == 201

    answer = quote(client, as_(world.researcher), world.project, resources=big)

    assert answer.status_code == 200
    shown = answer.json()
    assert (shown["quote_msu"], shown["available_msu"], shown["fits"]) == (8000, 2000, False)
    assert "requested 8" in shown["message"] and "available 2" in shown["message"]
    refused = submit(client, as_(world.researcher), world.project, resources=big)
    assert refused.json()["type"] == "/problems/quota-exceeded"


def test_a_quote_past_the_active_job_cap_does_not_fit(
        client: TestClient, world: World, as_: Headers, session: Session) -> None:
    world.acme.max_active_jobs = 1
    session.flush()
    assert submit(client, as_(world.researcher), world.project).status_code == 201

    shown = quote(client, as_(world.researcher), world.project).json()

    assert shown["fits"] is False and "its cap is 1" in shown["message"]


def test_a_quote_refuses_what_a_submission_refuses_with_the_same_problem(
        client: TestClient, world: World, as_: Headers) -> None:
    bad_directive = {"script": "#!/bin/bash\n#SBATCH --mem=lots\necho\n", "resources": {
        "partition": "cpu", "time_limit_minutes": 10}}
    cases: list[tuple[User, dict[str, Any]]] = [
        (world.researcher, bad_directive),
        (world.researcher, {"resources": {"partition": "nosuch", "mem_mb": 1,
                                          "time_limit_minutes": 1}}),
        (world.researcher, {"resources": {"partition": "cpu", "mem_mb": 1,
                                          "time_limit_minutes": 100_000}}),
        (world.viewer, {}),
        (world.stranger, {}),
    ]
    for user, changes in cases:
        quoted = quote(client, as_(user), world.project, **changes)
        submitted = submit(client, as_(user), world.project, **changes)
        assert quoted.status_code == submitted.status_code != 200, (changes, quoted.text)
        keep = ("type", "errors", "detail")
        assert {k: quoted.json().get(k) for k in keep} == {
            k: submitted.json().get(k) for k in keep}
