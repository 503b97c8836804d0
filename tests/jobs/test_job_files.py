"""The files of a job's working directory: listed (GET .../files?path=), and a directory asked
for as a file refused with where to list it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fake_scheduler import FakeScheduler
from fastapi.testclient import TestClient
from jobs_helpers import World, submit

from consortium.models import User

Headers = Callable[[User], dict[str, str]]


@pytest.fixture
def job(client: TestClient, world: World, as_: Headers, fake: FakeScheduler) -> str:
    answer = submit(client, as_(world.researcher), world.project, workdir="runs/a")
    assert answer.status_code == 201, answer.text
    root = fake.only().identity.work_root
    fake.files[(root, "runs/a/result.txt")] = b"42\n"
    fake.files[(root, "runs/a/ckpt/epoch-1.pt")] = b"\x00" * 10
    fake.files[(root, "runs/b/other.txt")] = b"not this job's"
    return str(answer.json()["id"])


def test_a_jobs_working_directory_and_its_subdirectories_are_listed(
        client: TestClient, world: World, as_: Headers, job: str) -> None:
    headers = as_(world.researcher)

    top = client.get(f"/api/v1/jobs/{job}/files", headers=headers)
    below = client.get(f"/api/v1/jobs/{job}/files", params={"path": "ckpt"}, headers=headers)

    assert top.status_code == 200, top.text
    assert top.json()["path"] == ""
    assert [(e["name"], e["type"], e["size"]) for e in top.json()["entries"]] == [
        ("ckpt", "dir", 0), ("result.txt", "file", 3)]
    assert below.json()["path"] == "ckpt"
    assert [(e["name"], e["size"]) for e in below.json()["entries"]] == [("epoch-1.pt", 10)]


def test_a_directory_asked_for_as_a_file_is_refused_with_where_to_list_it(
        client: TestClient, world: World, as_: Headers, job: str) -> None:
    answer = client.get(f"/api/v1/jobs/{job}/files/ckpt", headers=as_(world.researcher))

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["msg"] == (
        f"is a directory; list it with GET /api/v1/jobs/{job}/files?path=ckpt")


@pytest.mark.parametrize(("path", "status"), [
    ("result.txt", 422), ("missing", 404), ("../b", 422), ("/etc", 422)])
def test_a_listing_of_a_file_a_missing_or_an_outside_path_is_refused(
        *, client: TestClient, world: World, as_: Headers, job: str, path: str,
        status: int) -> None:
    answer = client.get(f"/api/v1/jobs/{job}/files", params={"path": path},
                        headers=as_(world.researcher))
    assert answer.status_code == status, answer.text
    assert answer.json()["type"] in ("/problems/validation", "/problems/not-found")


def test_another_members_job_files_are_not_listed(
        client: TestClient, world: World, as_: Headers, job: str) -> None:
    answer = client.get(f"/api/v1/jobs/{job}/files", headers=as_(world.stranger))
    assert answer.status_code == 404
