"""`hpcgw usage` shows the member's energy and carbon with their label beside the hours."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import auth_headers, make_member, make_project, make_user
from fastapi.testclient import TestClient
from footprint_helpers import settled_job
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from consortium.base import utcnow
from consortium.models import Role
from gateway.cli import app
from gateway.settings import Settings
from quotas import service as quotas
from quotas.models import AllocationKind


class Through:
    """The CLI's gateway client, answered by the app in the test's transaction."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.client.request(method, path, headers=self.headers, **kwargs)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def member_slug(session: Session, app_client: TestClient, settings: Settings,
                monkeypatch: pytest.MonkeyPatch) -> str:
    member = make_member(session, "lab")
    project = make_project(session, member)
    user = make_user(session, roles={member: Role.manager})
    now = utcnow()
    quotas.grant(session, member_id=member.id, amount_msu=10**6, kind=AllocationKind.grant,
                 starts_at=now - timedelta(days=40), ends_at=now + timedelta(days=30),
                 actor="admin")
    settled_job(session, project, user, ended_at=now - timedelta(days=1), source="estimated",
                kwh=2.5)
    settled_job(session, project, user, ended_at=now - timedelta(days=1), source="measured",
                kwh=1.5)
    settled_job(session, project, user, ended_at=datetime(2020, 1, 1, tzinfo=UTC),
                source="measured", kwh=100.0)  # before the current allocation
    session.flush()

    @contextmanager
    def gateway(_: str | None) -> Iterator[Through]:
        yield Through(app_client, auth_headers(settings, user))
    # the module (gateway.cli re-exports its function under the same name)
    monkeypatch.setattr(importlib.import_module("gateway.cli.usage"), "gateway", gateway)
    return member.slug


def test_usage_shows_energy_and_carbon_with_their_label(member_slug: str) -> None:
    shown = CliRunner().invoke(app, ["usage", "--member", member_slug])

    assert shown.exit_code == 0, shown.output
    assert ("energy 4.0 kWh (measured 1.5, estimated 2.5), carbon 86.8 gCO2e: "
            "partly measured, partly estimated; about 0.8 km by car") in shown.stdout
    assert "partly_measured" in shown.stdout  # the month's line


def test_usage_as_json_carries_the_footprint(member_slug: str) -> None:
    shown = CliRunner().invoke(app, ["usage", "--member", member_slug, "--json"])

    assert shown.exit_code == 0, shown.output
    footprint = json.loads(shown.stdout)["footprint"]["total"]
    assert (footprint["jobs"], footprint["label"]) == (2, "partly_measured")
