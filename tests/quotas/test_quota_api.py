"""The quotas over HTTP: allocations, refunds, usage and ledger (JSON and CSV), alerts, rates,
and the quota refusal as a 403 problem with its numbers."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import timedelta
from pathlib import Path

from factories import Cast, make_project
from fastapi.testclient import TestClient
from quota_fakes import FakeSink
from quota_helpers import audit, give, hold_hours, settle_hours
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import Outcome
from gateway.api.app import create_app
from gateway.api.routes.quotas import get_limit_sinks
from gateway.db import Database
from gateway.settings import Settings
from quotas.errors import QuotaExceeded
from schedulers.config import BillingWeights, ClusterConfig, PartitionConfig

V1 = "/api/v1"


def in_a_month() -> str:
    return (utcnow() + timedelta(days=30)).isoformat()


def test_admin_grants_an_allocation_in_su_and_reads_it_back_in_msu_and_su(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    answer = app_client.post(f"{V1}/members/acme/allocations", headers=as_(cast.admin),
                             json={"amount_su": "100.5", "ends_at": in_a_month(),
                                   "kind": "purchase", "overdraft_su": 10, "note": "PO 42"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["granted"] == {"msu": 100_500, "su": "100.500"}
    assert body["available"] == {"msu": 110_500, "su": "110.500"}
    assert (body["kind"], body["state"], body["note"]) == ("purchase", "active", "PO 42")
    [event] = audit(session, "allocation.grant")
    assert event.actor == "admin@consortium.test" and event.member_id == cast.acme.id
    listed = app_client.get(f"{V1}/members/acme/allocations", headers=as_(cast.viewer))
    assert listed.status_code == 200 and listed.json() == [body]


def test_an_allocation_is_earmarked_by_project_slug(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    project = make_project(session, cast.acme, "vision")
    answer = app_client.post(f"{V1}/members/acme/allocations", headers=as_(cast.admin),
                             json={"amount_msu": 5000, "ends_at": in_a_month(),
                                   "project": "vision"})
    assert answer.status_code == 201 and answer.json()["project_id"] == project.id
    missing = app_client.post(f"{V1}/members/acme/allocations", headers=as_(cast.admin),
                              json={"amount_msu": 5000, "ends_at": in_a_month(),
                                    "project": "nope"})
    assert missing.status_code == 422


def test_an_amount_is_given_in_su_or_msu_never_both_never_with_four_decimals(
        app_client: TestClient, cast: Cast, as_) -> None:
    for amounts in ({"amount_su": "1", "amount_msu": 1000}, {}, {"amount_su": "1.0005"},
                    {"amount_msu": 0}):
        answer = app_client.post(f"{V1}/members/acme/allocations", headers=as_(cast.admin),
                                 json={"ends_at": in_a_month(), **amounts})
        assert answer.status_code == 422, amounts
        assert answer.headers["content-type"] == "application/problem+json"


def test_only_admins_grant_and_a_refusal_is_audited(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    grant = {"amount_su": 10, "ends_at": in_a_month()}
    answer = app_client.post(f"{V1}/members/acme/allocations", headers=as_(cast.manager),
                             json=grant)
    assert answer.status_code == 403
    [denied] = audit(session, "allocation.grant")
    assert denied.outcome == Outcome.denied and denied.actor == "manager@acme.test"
    assert app_client.post(f"{V1}/members/acme/allocations", headers=as_(cast.globex_manager),
                           json=grant).status_code == 404


def test_another_members_caller_gets_404_on_every_quota_read(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    give(session, cast.acme, 10)
    for path in ("allocations", "usage", "ledger", "alerts", "usage?format=csv"):
        assert app_client.get(f"{V1}/members/acme/{path}",
                              headers=as_(cast.globex_manager)).status_code == 404, path
        assert app_client.get(f"{V1}/members/acme/{path}",
                              headers=as_(cast.viewer)).status_code == 200, path
        assert app_client.get(f"{V1}/members/acme/{path}",
                              headers=as_(cast.admin)).status_code == 200, path
        assert app_client.get(f"{V1}/members/acme/{path}").status_code == 401, path


def _spend(session: Session, cast: Cast) -> None:
    """Two projects, two users, two partitions: 7 SU charged, 3 held, a node failure refunded."""
    vision, speech = make_project(session, cast.acme, "vision"), make_project(session, cast.acme,
                                                                                 "speech")
    give(session, cast.acme, 100)
    hold_hours(session, cast.acme, "j1", 5, project=vision, user=cast.researcher,
               partition="gpu")
    settle_hours(session, "j1", 4)
    hold_hours(session, cast.acme, "j2", 3, project=speech, user=cast.manager, partition="cpu")
    settle_hours(session, "j2", 3)
    hold_hours(session, cast.acme, "j3", 2, project=speech, user=cast.manager, partition="cpu")
    settle_hours(session, "j3", 2, state="node_fail")
    hold_hours(session, cast.acme, "j4", 3, project=vision, user=cast.researcher,
               partition="gpu")


def _all_entries(client: TestClient, headers: dict[str, str]) -> list[dict]:
    entries, cursor = [], None
    for _ in range(100):
        page = client.get(f"{V1}/members/acme/ledger", headers=headers,
                          params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries
    raise AssertionError("the ledger never ended")


def test_usage_figures_are_sums_of_the_members_ledger_entries(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    _spend(session, cast)
    usage = app_client.get(f"{V1}/members/acme/usage", headers=as_(cast.viewer)).json()
    entries = _all_entries(app_client, as_(cast.viewer))
    by_kind = Counter()
    for entry in entries:
        by_kind[entry["kind"]] += entry["amount"]["msu"]
    assert usage["allocated"]["msu"] == by_kind["grant"] + by_kind["adjust"] == 100_000
    assert usage["used"]["msu"] == -(by_kind["charge"] + by_kind["refund"]) == 7000
    assert usage["held"]["msu"] == -(by_kind["hold"] + by_kind["release"]) == 3000
    assert usage["available"]["msu"] == sum(by_kind.values()) == 90_000
    assert (usage["open_holds"], usage["percent_used"]) == (1, "7.0")
    assert {(line["label"], line["used"]["msu"], line["held"]["msu"])
            for line in usage["by_project"]} == {("vision", 4000, 3000), ("speech", 3000, 0)}
    assert {(line["label"], line["used"]["msu"]) for line in usage["by_user"]} == {
        ("researcher@acme.test", 4000), ("manager@acme.test", 3000)}
    assert {(line["key"], line["used"]["msu"]) for line in usage["by_partition"]} == {
        ("gpu", 4000), ("cpu", 3000)}
    assert [(line["key"], line["used"]["msu"]) for line in usage["by_month"]] == [
        (f"{utcnow():%Y-%m}", 7000)]
    week, month = usage["pace"]
    assert (week["window_days"], week["used"]["msu"], week["per_day"]["msu"]) == (7, 7000, 1000)
    assert (month["window_days"], month["per_day"]["msu"]) == (30, 233)
    # 90 SU at 1 SU a day outlasts the 30 days left; at the month's pace even more so
    assert week["before_period_end"] is False and month["before_period_end"] is False


def test_usage_as_csv_by_accept_header_or_format_parameter(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    _spend(session, cast)
    by_header = app_client.get(f"{V1}/members/acme/usage",
                               headers={**as_(cast.viewer), "Accept": "text/csv"})
    by_param = app_client.get(f"{V1}/members/acme/usage?format=csv", headers=as_(cast.viewer))
    assert by_header.headers["content-type"].startswith("text/csv")
    assert by_param.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(by_param.text)))
    assert rows == list(csv.DictReader(io.StringIO(by_header.text)))
    figures = {(r["section"], r["label"] or r["key"], r["metric"]): (int(r["msu"]), r["su"])
               for r in rows}
    assert figures[("summary", "used", "amount")] == (7000, "7.000")
    assert figures[("summary", "held", "amount")] == (3000, "3.000")
    assert figures[("project", "vision", "held")] == (3000, "3.000")
    assert figures[("user", "manager@acme.test", "used")] == (3000, "3.000")


def test_ledger_pages_newest_first_and_exports_every_entry_as_csv(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    _spend(session, cast)
    entries = _all_entries(app_client, as_(cast.viewer))
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids)) == 12
    exported = app_client.get(f"{V1}/members/acme/ledger", headers={**as_(cast.viewer),
                                                                     "Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["id"]) for r in rows] == sorted(ids)
    assert sum(int(r["amount_msu"]) for r in rows) == 90_000
    holds = app_client.get(f"{V1}/members/acme/ledger", headers=as_(cast.viewer),
                           params={"kind": ["hold", "release"], "job": "j4"}).json()["items"]
    assert [(e["kind"], e["amount"]) for e in holds] == [("hold", {"msu": -3000,
                                                                    "su": "-3.000"})]


def test_admin_refunds_a_job_and_the_refund_shows_in_the_ledger(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    _spend(session, cast)
    body = {"job_id": "j2", "amount_su": "1.5", "reason": "maintenance"}
    assert app_client.post(f"{V1}/members/acme/refunds", headers=as_(cast.manager),
                           json=body).status_code == 403
    answer = app_client.post(f"{V1}/members/acme/refunds", headers=as_(cast.admin), json=body)
    assert answer.status_code == 201, answer.text
    assert (answer.json()["kind"], answer.json()["amount"]["msu"]) == ("refund", 1500)
    too_much = app_client.post(f"{V1}/members/acme/refunds", headers=as_(cast.admin),
                               json={**body, "amount_su": 2})
    assert too_much.status_code == 422 and "1.500 SU" in too_much.json()["detail"]
    assert app_client.post(f"{V1}/members/acme/refunds", headers=as_(cast.admin),
                           json={**body, "job_id": "unknown"}).status_code == 404
    assert [e.outcome for e in audit(session, "quota.refund")] == [Outcome.denied,
                                                                          Outcome.success]


def test_admin_adjusts_an_allocation_with_a_reason(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    allocation = give(session, cast.acme, 10)
    path = f"{V1}/members/acme/allocations/{allocation.id}/adjustments"
    answer = app_client.post(path, headers=as_(cast.admin),
                             json={"amount_su": "-2.5", "reason": "overlap with 2025"})
    assert answer.status_code == 201 and answer.json()["amount"]["msu"] == -2500
    assert app_client.post(path, headers=as_(cast.admin),
                           json={"amount_su": "1"}).status_code == 422  # no reason
    assert app_client.post(f"{V1}/members/globex/allocations/{allocation.id}/adjustments",
                           headers=as_(cast.admin),
                           json={"amount_su": "1", "reason": "x"}).status_code == 404
    [allocation_out] = app_client.get(f"{V1}/members/acme/allocations",
                                      headers=as_(cast.viewer)).json()
    assert allocation_out["granted"]["su"] == "7.500"


def test_alerts_are_listed_with_a_readable_message(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    give(session, cast.acme, 10)
    hold_hours(session, cast.acme, "j1", 9)
    settle_hours(session, "j1", 9)
    alerts = app_client.get(f"{V1}/members/acme/alerts", headers=as_(cast.viewer)).json()
    kinds = {a["kind"] for a in alerts}
    assert {"used_50", "used_80", "used_90"} <= kinds and "used_100" not in kinds
    assert any(a["message"].endswith("is 90 % used: 9.000 SU of 10.000 SU") for a in alerts)


def test_quota_refusal_is_a_403_problem_with_requested_available_and_held(
        app_client: TestClient) -> None:
    app = app_client.app

    @app.get("/test-refusal")
    def refuse() -> None:
        raise QuotaExceeded(requested_msu=5000, available_msu=1250, held_msu=8750, open_holds=3)

    answer = app_client.get("/test-refusal")
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"] == "/problems/quota-exceeded"
    assert body["detail"] == ("requested 5.000 SU, available 1.250 SU, held 8.750 SU by 3 "
                              "pending or running job(s)")
    assert (body["requested_msu"], body["available_su"], body["held_msu"], body["open_holds"]) == (
        5000, "1.250", 8750, 3)


def _cluster(tmp_path: Path) -> ClusterConfig:
    return ClusterConfig(name="meso", backend="local", local_root=tmp_path, partitions=[
        PartitionConfig(name="gpu", max_time_minutes=1440, max_cpus_per_job=32,
                        max_gpus_per_job=4, max_mem_mb_per_job=256 * 1024,
                        billing=BillingWeights(gpu=1.0, cpu=0.125, mem_gb=0.015625)),
        PartitionConfig(name="cpu", max_time_minutes=2880, max_cpus_per_job=64,
                        max_mem_mb_per_job=128 * 1024,
                        billing=BillingWeights(gpu=0.0, cpu=0.03125, mem_gb=0.0078125)),
    ])


def test_rate_card_comes_from_the_cluster_configuration(
        settings: Settings, database: Database, cast: Cast, as_, tmp_path: Path) -> None:
    configured = settings.model_copy(update={"clusters": [_cluster(tmp_path)]})
    # no `with`: the app's lifespan (its trackers) is not needed to read a rate card
    client = TestClient(create_app(configured, database=database))
    card = client.get(f"{V1}/clusters/meso/rates", headers=as_(cast.viewer))
    assert card.status_code == 200
    gpu, cpu = card.json()["partitions"]
    assert gpu["weights"] == {"gpu": 1.0, "cpu": 0.125, "mem_gb": 0.015625}
    assert (gpu["per_gpu_hour"]["su"], gpu["per_cpu_hour"]["msu"],
            gpu["per_gb_hour"]["msu"]) == ("1.000", 125, 16)
    # the largest gpu job: max(4 GPUs, 32 cores x 0.125, 256 GiB x 1/64) = 4 SU an hour
    assert gpu["max_job_per_hour"] == {"msu": 4000, "su": "4.000"}
    assert cpu["max_job_per_hour"]["msu"] == 2000  # 64 cores x 1/32
    assert client.get(f"{V1}/clusters/nope/rates", headers=as_(cast.viewer)).status_code == 404
    assert client.get(f"{V1}/clusters/meso/rates").status_code == 401


def test_a_grant_pushes_the_slurm_limit_after_the_request_committed(
        settings: Settings, fresh_database: Database) -> None:
    from factories import auth_headers, make_cast

    with fresh_database.transaction() as session:
        cast = make_cast(session)
        admin = cast.admin
    sink = FakeSink(fresh_database)
    app = create_app(settings, database=fresh_database)
    app.dependency_overrides[get_limit_sinks] = lambda: {"local": sink}
    with TestClient(app) as client:
        answer = client.post(f"{V1}/members/acme/allocations",
                             headers=auth_headers(settings, admin),
                             json={"amount_su": 100, "ends_at": in_a_month()})
    assert answer.status_code == 201
    # the sink, on a connection of its own, already saw the allocation: it was committed
    assert sink.seen_committed == [True]
    assert list(sink.limits.values()) == [6600]  # 110 SU: 100 granted + 10 % margin


def test_a_token_without_usage_read_cannot_read_its_members_usage(
        app_client: TestClient, cast: Cast, as_) -> None:
    minted = app_client.post(f"{V1}/me/tokens", headers=as_(cast.manager),
                             json={"name": "jobs only", "scopes": ["jobs:read"]})
    assert minted.status_code == 201, minted.text
    token = {"Authorization": f"Bearer {minted.json()['token']}"}
    for path in ("usage", "ledger", "alerts", "allocations"):
        assert app_client.get(f"{V1}/members/acme/{path}", headers=token).status_code == 403
    reporting = app_client.post(f"{V1}/me/tokens", headers=as_(cast.manager),
                                json={"name": "reporting", "scopes": ["usage:read"]}).json()
    assert app_client.get(f"{V1}/members/acme/usage?format=csv", headers={
        "Authorization": f"Bearer {reporting['token']}"}).status_code == 200
