"""Submissions racing for a member's last active-job slots never all pass: the member row's
lock serialises them, and each counts the jobs committed before it (real commits)."""

from __future__ import annotations

import threading
from collections import Counter

from fastapi.testclient import TestClient
from jobs_helpers import World, job_body
from sqlalchemy import func, select

from consortium.audit import RequestContext
from consortium.models import Member
from gateway.auth.principal import principal_for_user
from gateway.db import Database
from gateway.jobs.errors import TooManyActiveJobs
from gateway.jobs.models import Job
from gateway.jobs.schemas import JobCreate
from gateway.jobs.service import JobService


def test_twelve_concurrent_submissions_under_a_cap_of_three_accept_exactly_three(
        committed: tuple[World, TestClient], fresh_database: Database) -> None:
    world, client = committed
    service: JobService = client.app.state.jobs  # type: ignore[attr-defined]
    with fresh_database.transaction() as session:
        session.get_one(Member, world.acme.id).max_active_jobs = 3
        principal = principal_for_user(session, world.researcher)
    request = JobCreate.model_validate(job_body(world.project.id))
    start = threading.Barrier(12, timeout=30)
    outcomes: Counter[str] = Counter()

    def accept() -> None:
        start.wait()
        try:
            with fresh_database.transaction() as session:
                service._accept(session, principal, request, RequestContext(), None,
                                submitting=True)
            outcomes["accepted"] += 1
        except TooManyActiveJobs:
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - counted, and the assertion shows it
            outcomes[repr(exc)] += 1

    threads = [threading.Thread(target=accept) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == {"accepted": 3, "refused": 9}
    with fresh_database.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 3
