"""A consortium with one of every object the API names in a path, made through the API where
the API makes it, for the tests that walk every operation of the OpenAPI document: the job
tests' `test` cluster behind their FakeScheduler, acme's people, a project, an allocation, a
job, a personal token, an invitation, a webhook and a file."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from factories import auth_headers
from fastapi.testclient import TestClient
from httpx import Response

from gateway.api.app import API_PREFIX
from gateway.jobs.config import JobsSettings
from gateway.settings import Settings
from gateway.webhooks.config import WebhookSettings
from schedulers.config import ClusterConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from fake_scheduler import FakeScheduler
from jobs_helpers import CLUSTER, World, cluster_config, job_body

__all__ = ["CLUSTER", "FakeScheduler", "Seeded", "cluster_config", "seed", "seeded_settings"]

FILE = "data/input.txt"


def seeded_settings(settings: Settings, config: ClusterConfig) -> Settings:
    """The suite's settings with the `test` cluster, event streams that end within a second,
    and webhooks allowed to target loopback (nothing is delivered: the worker is off)."""
    return settings.model_copy(update={
        "clusters": [config],
        "jobs": JobsSettings(tracker_in_serve=False, stream_poll_seconds=0.05,
                             stream_max_seconds=0.5),
        "webhooks": WebhookSettings(worker_in_serve=False, allowed_hosts=["127.0.0.1"])})


@dataclass
class Seeded:
    world: World
    admin: dict[str, str]  # headers of the consortium admin
    researcher: dict[str, str]  # headers of acme's researcher
    path: dict[str, str]  # an existing object for every path parameter of the API


def _created(answer: Response) -> dict[str, object]:
    assert answer.status_code in (200, 201), answer.text
    body = answer.json()
    assert isinstance(body, dict)
    return body


def seed(client: TestClient, settings: Settings, world: World) -> Seeded:
    admin = auth_headers(settings, world.admin)
    researcher = auth_headers(settings, world.researcher)
    api = API_PREFIX
    job = _created(client.post(f"{api}/jobs", headers=researcher, json=job_body(world.project)))
    token = _created(client.post(f"{api}/me/tokens", headers=admin,
                                 json={"name": "fuzz", "scopes": ["admin"]}))
    invitation = _created(client.post(f"{api}/members/acme/invitations", headers=admin,
                                      json={"email": "new@acme.test", "role": "viewer"}))
    link = invitation["link"]
    assert isinstance(link, str)
    hook = _created(client.post(
        f"{api}/members/acme/projects/{world.project.slug}/webhooks", headers=admin,
        json={"url": "http://127.0.0.1:9/hook", "events": ["job.state_changed"]}))
    allocations = client.get(f"{api}/members/acme/allocations", headers=admin).json()
    upload = client.put(f"{api}/members/acme/files/{FILE}", headers=researcher, content=b"x")
    assert upload.status_code == 201, upload.text
    # an account of its own for /users/{email}: fuzzing may deactivate it
    spare = _created(client.post(f"{api}/users", headers=admin, json={
        "email": "spare@consortium.test", "name": "Spare",
        "password": "Tuna-Lantern-Quiet-Orbit-77"}))
    return Seeded(world=world, admin=admin, researcher=researcher, path={
        "member": "acme", "project": world.project.slug, "user_id": str(world.researcher.id),
        "job_id": str(job["id"]), "token_id": str(token["id"]),
        "invitation_id": str(invitation["id"]), "token": link.rstrip("/").rsplit("/", 1)[-1],
        "allocation_id": str(allocations[0]["id"]), "webhook_id": str(hook["id"]),
        "cluster": CLUSTER, "slug": "pytorch-cpu", "path": FILE, "email": str(spare["email"])})
