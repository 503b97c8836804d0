"""The transparency report over HTTP: its totals are the sums of the jobs', its groups add up to
them, a group of fewer than 3 members is in "other", a month of 1 or 2 members is withheld;
public only when configured; JSON and CSV. And each member's own footprint, and the
consortium's for its admins."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from factories import auth_headers, make_member, make_project, make_user
from fastapi.testclient import TestClient
from footprint_helpers import settled_job
from sqlalchemy.orm import Session

from consortium.models import Domain, Member, MemberKind, Project, Role, User
from gateway.api.app import create_app
from gateway.db import Database
from gateway.jobs.models import Job
from gateway.settings import Settings

V1 = "/api/v1"
REPORT = f"{V1}/reports/transparency?from=2026-01&to=2026-03"
# (kind, domain) of each member: 4 research labs, 3 public bodies, 2 companies (too few)
CONSORTIUM = [(MemberKind.research, Domain.health)] * 3 + [(MemberKind.research, Domain.research)]
CONSORTIUM += [(MemberKind.public_body, Domain.education)] * 3
CONSORTIUM += [(MemberKind.company, Domain.health), (MemberKind.company, Domain.culture)]


@dataclass
class World:
    members: list[Member]
    projects: list[Project]
    users: list[User]
    admin: User
    jobs: list[Job] = field(default_factory=list)


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 12, tzinfo=UTC)


@pytest.fixture
def world(session: Session) -> World:
    rng = random.Random(14)
    members = [make_member(session, f"org-{i}", kind=kind)
               for i, (kind, _) in enumerate(CONSORTIUM)]
    projects = []
    for member, (_, domain) in zip(members, CONSORTIUM, strict=True):
        project = make_project(session, member)
        project.domain = domain
        projects.append(project)
    users = [make_user(session, roles={m: Role.manager}) for m in members]
    found = World(members, projects, users, make_user(session, admin=True))
    for month in (1, 2):
        for project, user in zip(projects, users, strict=True):
            for source in ("measured", "estimated", "not_estimated"):
                kwh = None if source == "not_estimated" else round(rng.uniform(0.1, 50), 6)
                found.jobs.append(settled_job(session, project, user, ended_at=at(month, 10),
                                              source=source, kwh=kwh,
                                              charge_msu=rng.randrange(1, 10**6)))
    # March: one member alone; December 2025: outside the period
    found.jobs.append(settled_job(session, projects[0], users[0], ended_at=at(3, 1),
                                  source="estimated", kwh=7.0))
    settled_job(session, projects[1], users[1], ended_at=datetime(2025, 12, 31, tzinfo=UTC),
                source="estimated", kwh=9.0)
    session.flush()
    return found


def _sum(groups: list[dict[str, Any]], *path: str) -> float:
    total = 0.0
    for g in groups:
        value: Any = g["footprint"]
        for key in path:
            value = value[key]
        total += value
    return total


def test_the_reports_totals_are_the_sums_of_the_jobs_and_small_groups_are_other(
        app_client: TestClient, world: World, settings: Settings) -> None:
    shown = [j for j in world.jobs if j.ended_at and j.ended_at.month in (1, 2)]

    answer = app_client.get(REPORT, headers=auth_headers(settings, world.users[0]))

    assert answer.status_code == 200, answer.text
    report = answer.json()
    total = report["total"]["footprint"]
    assert report["withheld_months"] == ["2026-03"]
    assert (report["members"], report["projects"], total["jobs"]) == (9, 9, len(shown))
    assert report["members_in_consortium"] == len(world.members)
    kwh = sum(j.energy_kwh or 0 for j in shown)
    assert total["energy_kwh"]["total"] == pytest.approx(kwh, abs=5e-4)
    assert total["energy_kwh"]["measured"] == pytest.approx(
        sum(j.energy_kwh or 0 for j in shown if j.energy_source == "measured"), abs=5e-4)
    assert total["carbon_g"]["total"] == pytest.approx(kwh * 21.7, abs=0.05)
    assert total["compute"]["msu"] == sum(j.charge_msu or 0 for j in shown)
    assert total["jobs_by_source"] == {"measured": 18, "estimated": 18, "not_estimated": 18}
    assert total["label"] == "partly_measured"
    for breakdown in ("by_domain", "by_kind"):
        groups = report[breakdown]
        assert _sum(groups, "energy_kwh", "total") == pytest.approx(kwh, abs=5e-3)
        assert _sum(groups, "jobs") == total["jobs"]
        assert all(g["members"] >= 3 for g in groups)
    # two companies: folded, and with them the smallest other kind (public bodies, 3)
    assert sorted(g["key"] for g in report["by_kind"]) == ["other", "research"]
    # health: 3 labs + a company; education 3; research 1 and culture 1 go to other, which
    # then holds 2 members: education (the smallest) joins them
    assert sorted(g["key"] for g in report["by_domain"]) == ["health", "other"]
    assert report["figures"] == []  # no cluster configured in this app


def test_the_report_is_private_unless_configured_public(
        app_client: TestClient, world: World, settings: Settings, database: Database) -> None:
    assert app_client.get(REPORT).status_code == 401
    public = settings.model_copy(update={"public_transparency_report": True})
    with TestClient(create_app(public, database=database)) as client:
        answer = client.get(REPORT)
        assert answer.status_code == 200
        assert answer.json()["total"]["footprint"]["jobs"] == 54
        assert client.get(REPORT, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_report_downloads_as_csv_with_its_labels(
        app_client: TestClient, world: World, settings: Settings) -> None:
    answer = app_client.get(REPORT, headers={**auth_headers(settings, world.admin),
                                             "Accept": "text/csv"})

    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    [total] = [r for r in rows if r["section"] == "total"]
    assert total["figures"] == "partly_measured"
    assert int(total["jobs"]) == 54 and int(total["members"]) == 9
    assert {r["key"] for r in rows if r["section"] == "kind"} == {"other", "research"}


@pytest.mark.parametrize("query", ["from=2026-03&to=2026-01", "from=2026-13", "to=26-01",
                                   "from=1990-01&to=2026-01"])
def test_a_bad_period_is_a_422_problem(app_client: TestClient, world: World,
                                       settings: Settings, query: str) -> None:
    answer = app_client.get(f"{V1}/reports/transparency?{query}",
                            headers=auth_headers(settings, world.admin))

    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_a_member_reads_its_own_footprint_by_project_user_domain_and_month(
        app_client: TestClient, world: World, settings: Settings) -> None:
    member, user = world.members[0], world.users[0]
    mine = [j for j in world.jobs if j.member_id == member.id]

    answer = app_client.get(f"{V1}/members/{member.slug}/footprint",
                            headers=auth_headers(settings, user))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"]["jobs"] == len(mine)
    assert body["total"]["energy_kwh"]["total"] == pytest.approx(
        sum(j.energy_kwh or 0 for j in mine), abs=5e-4)
    months = {line["key"]: line["footprint"]["jobs"] for line in body["breakdowns"]["month"]}
    assert months == {"2026-01": 3, "2026-02": 3, "2026-03": 1}
    assert [line["key"] for line in body["breakdowns"]["domain"]] == ["health"]
    assert body["breakdowns"]["user"][0]["label"] == user.email
    car = body["total"]["equivalents"]["car_km"]
    assert car == pytest.approx(body["total"]["carbon_g"]["total"] / 106, abs=0.06)
    other = app_client.get(f"{V1}/members/{member.slug}/footprint",
                           headers=auth_headers(settings, world.users[1]))
    assert other.status_code == 404
    as_csv = app_client.get(f"{V1}/members/{member.slug}/footprint?format=csv",
                            headers=auth_headers(settings, user))
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["figures"] for r in rows if r["section"] == "month"} == {
        "partly_measured", "estimated"}


def test_the_consortiums_footprint_by_member_is_for_admins(
        app_client: TestClient, world: World, settings: Settings) -> None:
    answer = app_client.get(f"{V1}/reports/footprint",
                            headers=auth_headers(settings, world.admin))
    refused = app_client.get(f"{V1}/reports/footprint",
                             headers=auth_headers(settings, world.users[0]))

    assert answer.status_code == 200 and refused.status_code == 403
    by_member = {line["label"]: line["footprint"]["jobs"]
                 for line in answer.json()["breakdowns"]["member"]}
    assert by_member["org-0"] == 7 and by_member["org-1"] == 7  # December's job included
