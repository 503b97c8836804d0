"""The job reads' fast path (authentication and reads in one worker-thread transaction): the
credential is checked again on every request, and many concurrent reads never starve the pool."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from jobs_helpers import World, submit

from consortium.models import User

Headers = Callable[[User], dict[str, str]]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_revoked_token_reads_no_job_from_the_next_request(
    committed: tuple[World, TestClient], as_: Headers
) -> None:
    world, client = committed
    job = submit(client, as_(world.researcher), world.project).json()["id"]
    created = client.post("/api/v1/me/tokens", json={"name": "ci", "scopes": ["jobs:read"]},
                          headers=as_(world.researcher)).json()
    assert client.get(f"/api/v1/jobs/{job}", headers=_bearer(created["token"])).status_code == 200

    revoked = client.delete(f"/api/v1/me/tokens/{created['id']}", headers=as_(world.researcher))

    assert revoked.status_code == 204
    for path in (f"/api/v1/jobs/{job}", "/api/v1/jobs"):
        refused = client.get(path, headers=_bearer(created["token"]))
        assert refused.status_code == 401
        assert refused.json()["detail"] == "this access token has been revoked"


def test_a_suspended_members_jobs_are_unreadable_from_the_next_request(
    committed: tuple[World, TestClient], as_: Headers
) -> None:
    world, client = committed
    job = submit(client, as_(world.researcher), world.project).json()["id"]
    assert client.get(f"/api/v1/jobs/{job}", headers=as_(world.researcher)).status_code == 200

    suspended = client.patch("/api/v1/members/acme", json={"status": "suspended"},
                             headers=as_(world.admin))

    assert suspended.status_code == 200, suspended.text
    assert client.get(f"/api/v1/jobs/{job}", headers=as_(world.researcher)).status_code == 404
    assert client.get("/api/v1/jobs", headers=as_(world.researcher)).json()["items"] == []


def test_reads_answer_when_more_run_at_once_than_the_pool_has_connections(
    committed: tuple[World, TestClient], as_: Headers
) -> None:
    # a session held from one worker-thread hop to the next could deadlock here under load:
    # every worker thread waiting for a connection (QueuePool: 15) held by a request that needed
    # a thread to go on
    world, client = committed
    headers = as_(world.researcher)
    job = submit(client, headers, world.project).json()["id"]

    pool = ThreadPoolExecutor(max_workers=80)
    try:
        statuses = list(pool.map(
            lambda _: client.get(f"/api/v1/jobs/{job}", headers=headers).status_code,
            range(80), timeout=60))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a deadlock fails the test, not the run

    assert statuses == [200] * 80


def test_a_job_id_of_another_form_is_refused_as_fastapi_refuses_a_path_parameter(
    committed: tuple[World, TestClient], as_: Headers
) -> None:
    # the poll's route solves no parameter itself (gateway.api.routes.jobs._PollRoute): an id
    # that is not 12 hexadecimal digits goes to FastAPI's handler, for its 422
    world, client = committed
    job = submit(client, as_(world.researcher), world.project).json()["id"]
    for bad in (job.upper(), job[:-1], f"{job}0", f"{job}%0A", "0x" + job[2:], "%00" + job[3:]):
        refused = client.get(f"/api/v1/jobs/{bad}", headers=as_(world.researcher))
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert [e["loc"] for e in refused.json()["errors"]] == [["path", "job_id"]], bad
    unknown = client.get(f"/api/v1/jobs/{'0' * 12}", headers=as_(world.researcher))
    assert unknown.status_code == 404
    assert client.get(f"/api/v1/jobs/{job}", headers=as_(world.researcher)).status_code == 200
