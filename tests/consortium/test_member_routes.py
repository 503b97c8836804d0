"""Members and their cluster identities through the API: onboarding, listing, suspending."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import WEIGHTS, Cast, audit_events
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.authz import Principal, Scope
from consortium.errors import PermissionDenied
from consortium.models import ClusterIdentity, Member, MemberKind, Outcome
from consortium.schemas import MemberCreate
from consortium.service import create_member
from gateway.api.app import create_app
from gateway.db import Database
from gateway.settings import Settings
from schedulers.config import ClusterConfig, IdentityConfig, PartitionConfig

ACME_IDENTITY = {"cluster": "meso", "unix_user": "acme", "slurm_account": "acme",
                 "ssh_key_ref": "acme"}


def new_member(slug: str = "initech", **extra: object) -> dict[str, object]:
    return {"slug": slug, "name": "Initech SARL", "kind": "company",
            "contact_name": "Bill Lumbergh", "contact_email": "bill@initech.test", **extra}


def test_admin_creates_member_with_its_cluster_identities_in_one_call(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    identity = {**ACME_IDENTITY, "unix_user": "initech", "slurm_account": "initech",
                "ssh_key_ref": "initech-key"}
    answer = app_client.post("/api/v1/members", headers=as_(cast.admin),
                             json=new_member(identities=[identity]))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["slug"] == "initech" and body["status"] == "active"
    # no such cluster configured here: recorded, its Slurm account pending
    assert body["identities"] == [{**identity, "allowed_partitions": None,
                                   "provisioning": "pending", "slurm_synced_at": None,
                                   "slurm_error": "no such cluster in the configuration",
                                   "removed_at": None}]
    assert (body["templates_only"], body["max_active_jobs"]) == (False, None)
    member_id = body["id"]
    [created] = audit_events(session, "member.create")
    assert (created.actor, created.member_id, created.outcome) == (
        "admin@consortium.test", member_id, Outcome.success)
    [added] = audit_events(session, "identity.add")
    assert added.details["ssh_key_ref"] == "initech-key"
    assert app_client.get("/api/v1/members/initech", headers=as_(cast.admin)).json() == body


def test_member_slug_must_be_lowercase_letters_digits_and_hyphens(
        app_client: TestClient, cast: Cast, as_) -> None:
    for slug in ("Initech", "i", "-initech", "init_ech", "x" * 65):
        answer = app_client.post("/api/v1/members", headers=as_(cast.admin),
                                 json=new_member(slug))
        assert answer.status_code == 422, slug
        assert answer.headers["content-type"] == "application/problem+json"
        assert ["body", "slug"] in [e["loc"] for e in answer.json()["errors"]]


def test_a_second_member_with_the_same_slug_is_a_conflict(
        app_client: TestClient, cast: Cast, as_) -> None:
    answer = app_client.post("/api/v1/members", headers=as_(cast.admin), json=new_member("acme"))
    assert answer.status_code == 409
    assert answer.json()["type"] == "/problems/conflict"


def test_manager_cannot_create_a_member_and_the_refusal_is_audited(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    answer = app_client.post("/api/v1/members", headers=as_(cast.manager), json=new_member())
    assert answer.status_code == 403
    assert session.scalar(select(Member).where(Member.slug == "initech")) is None
    [denied] = audit_events(session, "member.create")
    assert (denied.actor, denied.outcome) == ("manager@acme.test", Outcome.denied)


def test_admin_flag_without_the_admin_scope_on_the_token_grants_no_admin_right(
        session: Session, cast: Cast) -> None:
    narrowed = Principal(user_id=cast.admin.id, email=cast.admin.email, is_admin=True,
                         roles={}, scopes=frozenset({Scope.members_manage}), via="pat")
    with pytest.raises(PermissionDenied):
        create_member(session, narrowed, MemberCreate.model_validate(new_member()), [],
                      context=RequestContext())


def test_two_members_can_never_share_a_unix_account_or_slurm_account_on_a_cluster(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    first = app_client.post("/api/v1/members", headers=as_(cast.admin),
                            json=new_member("first", identities=[ACME_IDENTITY]))
    assert first.status_code == 201
    for clash in ({"slurm_account": "other"}, {"unix_user": "other"}):
        identity = {**ACME_IDENTITY, **clash}
        answer = app_client.post("/api/v1/members", headers=as_(cast.admin),
                                 json=new_member("second", identities=[identity]))
        assert answer.status_code == 409, clash
        assert "another member" in answer.json()["detail"]
    # and the refused member was not half-created
    assert session.scalar(select(Member).where(Member.slug == "second")) is None


def test_a_member_has_one_identity_per_cluster(
        app_client: TestClient, cast: Cast, as_) -> None:
    other = {**ACME_IDENTITY, "cluster": "local", "unix_user": "x2", "slurm_account": "x2"}
    answer = app_client.post("/api/v1/members/acme/identities", headers=as_(cast.admin),
                             json=other)
    assert answer.status_code == 409  # make_member gave acme an identity on "local"
    answer = app_client.post("/api/v1/members/acme/identities", headers=as_(cast.admin),
                             json=ACME_IDENTITY)
    assert answer.status_code == 201
    assert [i["cluster"] for i in app_client.get(
        "/api/v1/members/acme", headers=as_(cast.admin)).json()["identities"]] == ["local", "meso"]


def test_a_pasted_private_key_is_refused_as_key_ref_and_never_echoed(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH"
    answer = app_client.post("/api/v1/members/acme/identities", headers=as_(cast.admin),
                             json={**ACME_IDENTITY, "ssh_key_ref": key})
    assert answer.status_code == 422
    assert "PRIVATE KEY" not in answer.text
    assert session.scalar(select(ClusterIdentity).where(ClusterIdentity.cluster == "meso")) is None


@pytest.fixture
def meso_client(settings: Settings, database: Database, tmp_path: Path) -> Iterator[TestClient]:
    meso = ClusterConfig(
        name="meso", backend="local", local_root=tmp_path / "jobs",
        identities={"acme": IdentityConfig(unix_user="acme", key_file=tmp_path / "acme")},
        partitions=[PartitionConfig(name="gpu", max_time_minutes=60, max_cpus_per_job=8,
                                    max_mem_mb_per_job=1000, billing=WEIGHTS)],
    )
    # no scheduler: the cluster is configured, but no tracker runs on the test's connection
    with TestClient(create_app(settings.model_copy(update={"clusters": [meso]}),
                               database=database, schedulers={})) as client:
        yield client


@pytest.mark.parametrize(("change", "complaint"), [
    ({"cluster": "jeanzay"}, "no cluster 'jeanzay'"),
    ({"ssh_key_ref": "globex"}, "no identity 'globex'"),
    ({"unix_user": "acme2"}, "logs in as 'acme'"),
    ({"allowed_partitions": ["gpu", "bigmem"]}, "no partition bigmem"),
])
def test_identity_must_name_a_configured_cluster_and_one_of_its_identities(
        meso_client: TestClient, cast: Cast, as_, change: dict[str, str], complaint: str) -> None:
    answer = meso_client.post("/api/v1/members/globex/identities", headers=as_(cast.admin),
                              json={**ACME_IDENTITY, **change})
    assert answer.status_code == 422
    assert complaint in answer.json()["detail"]


def test_identity_matching_the_cluster_configuration_is_accepted(
        meso_client: TestClient, cast: Cast, as_) -> None:
    answer = meso_client.post("/api/v1/members/globex/identities", headers=as_(cast.admin),
                              json={**ACME_IDENTITY, "allowed_partitions": ["gpu"]})
    assert answer.status_code == 201, answer.text
    assert answer.json()["allowed_partitions"] == ["gpu"]


def test_admins_list_every_member_and_others_only_their_own(
        app_client: TestClient, cast: Cast, as_) -> None:
    def slugs(user: object) -> list[str]:
        return [m["slug"] for m in app_client.get("/api/v1/members", headers=as_(user)).json()]

    assert slugs(cast.admin) == ["acme", "globex"]
    assert slugs(cast.viewer) == ["acme"]
    assert slugs(cast.globex_manager) == ["globex"]


def test_member_details_name_the_key_but_hold_no_key(
        app_client: TestClient, cast: Cast, as_) -> None:
    body = app_client.get("/api/v1/members/acme", headers=as_(cast.viewer)).json()
    assert body["identities"][0]["ssh_key_ref"] == "key-acme"
    assert set(body["identities"][0]) == {"cluster", "unix_user", "slurm_account", "ssh_key_ref",
                                          "allowed_partitions", "provisioning",
                                          "slurm_synced_at", "slurm_error", "removed_at"}


def test_admin_renames_suspends_and_reactivates_a_member_each_change_audited(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    answer = app_client.patch("/api/v1/members/acme", headers=as_(cast.admin),
                              json={"name": "ACME Corp", "status": "suspended"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["name"], answer.json()["status"]) == ("ACME Corp", "suspended")
    assert [e.action for e in audit_events(session)] == ["member.update", "member.suspend"]
    # a suspended member's people lose their rights at once: it is not theirs to see any more
    assert app_client.get("/api/v1/members/acme", headers=as_(cast.manager)).status_code == 404
    answer = app_client.patch("/api/v1/members/acme", headers=as_(cast.admin),
                              json={"status": "active"})
    assert answer.json()["status"] == "active"
    assert audit_events(session)[-1].action == "member.reactivate"
    assert app_client.get("/api/v1/members/acme", headers=as_(cast.manager)).status_code == 200


def test_manager_cannot_change_its_member_record(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    answer = app_client.patch("/api/v1/members/acme", headers=as_(cast.manager),
                              json={"status": "suspended"})
    assert answer.status_code == 403
    session.expire_all()
    assert session.get(Member, cast.acme.id).status == "active"  # type: ignore[union-attr]
    [denied] = audit_events(session, "member.update")
    assert (denied.outcome, denied.member_id) == (Outcome.denied, cast.acme.id)


def test_null_name_is_refused_but_contact_can_be_cleared(
        app_client: TestClient, cast: Cast, as_) -> None:
    assert app_client.patch("/api/v1/members/acme", headers=as_(cast.admin),
                            json={"name": None}).status_code == 422
    answer = app_client.patch("/api/v1/members/acme", headers=as_(cast.admin),
                              json={"contact_email": None})
    assert answer.status_code == 200 and answer.json()["contact_email"] is None


def test_member_kinds_are_the_three_of_the_consortium(
        app_client: TestClient, cast: Cast, as_) -> None:
    for kind in MemberKind:
        answer = app_client.post("/api/v1/members", headers=as_(cast.admin),
                                 json=new_member(f"m-{kind.value.replace('_', '-')}", kind=kind))
        assert answer.status_code == 201
    answer = app_client.post("/api/v1/members", headers=as_(cast.admin),
                             json=new_member("m-ngo", kind="ngo"))
    assert answer.status_code == 422


def test_admin_sets_a_members_job_policy_and_a_manager_cannot(
        app_client: TestClient, cast: Cast, as_, session: Session) -> None:
    policy = {"templates_only": True, "max_active_jobs": 5}
    assert app_client.patch("/api/v1/members/acme", headers=as_(cast.manager),
                            json=policy).status_code == 403
    answer = app_client.patch("/api/v1/members/acme", headers=as_(cast.admin), json=policy)
    assert answer.status_code == 200
    assert (answer.json()["templates_only"], answer.json()["max_active_jobs"]) == (True, 5)
    assert audit_events(session, "member.update")[-1].details == policy
    # back to the gateway's default cap; templates_only needs a value
    answer = app_client.patch("/api/v1/members/acme", headers=as_(cast.admin),
                              json={"max_active_jobs": None})
    assert answer.json()["max_active_jobs"] is None
    assert app_client.patch("/api/v1/members/acme", headers=as_(cast.admin),
                            json={"templates_only": None}).status_code == 422
