"""Provisioning's rules with an in-memory cluster: identities become Slurm accounts after the
commit, a cluster that cannot be reached leaves them pending until the tracker's turn,
suspension blocks and holds (or cancels), reactivation lifts both, removal blocks and never
deletes; the demo's local cluster takes an identity through the API's own check."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from factories import make_member, make_project, make_user
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium import service
from consortium.audit import CLI_CONTEXT
from consortium.base import utcnow
from consortium.errors import Conflict, InvalidInput
from consortium.models import ClusterIdentity, Member, MemberKind, MemberStatus
from consortium.schemas import IdentityIn, MemberUpdate
from gateway.api.app import create_app
from gateway.db import Database
from gateway.demo import local_cluster
from gateway.jobs.admission import account_and_active_jobs
from gateway.jobs.cluster_status import ClusterHealth, observe
from gateway.jobs.clusters import Cluster
from gateway.jobs.config import JobsSettings
from gateway.jobs.models import Job, JobState
from gateway.provisioning import install as install_provisioning
from gateway.provisioning import provision
from gateway.settings import Settings
from quotas import service as quotas
from quotas.models import AllocationKind
from schedulers.base import AccountingSync, Scheduler
from schedulers.config import BillingWeights, ClusterConfig, IdentityConfig, PartitionConfig
from schedulers.errors import SchedulerUnavailable
from schedulers.models import AssociationLimits, Health, Identity

ACTOR = "cli"


class FakeSlurm(AccountingSync):
    """sacctmgr's accounts and associations, in memory; `down` refuses every call."""

    def __init__(self) -> None:
        self.associations: set[tuple[str, str]] = set()
        self.limits: dict[str, AssociationLimits] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise SchedulerUnavailable("connection refused")

    async def ensure_account(self, account: str, unix_user: str, description: str) -> bool:
        self._check()
        new = account not in self.limits or (account, unix_user) not in self.associations
        self.limits.setdefault(account, AssociationLimits(account=account))
        self.associations.add((account, unix_user))
        return new

    async def read_limits(self, account: str) -> AssociationLimits | None:
        self._check()
        return self.limits.get(account)

    async def set_limits(self, limits: AssociationLimits) -> AssociationLimits:
        self._check()
        self.limits[limits.account] = limits
        return limits

    async def read_usage(self, account: str) -> int | None:
        return None


class FakeCluster(Scheduler):
    """What provisioning asks of a scheduler: its accounting, holds, cancels, a probe."""

    supports_hold = True

    def __init__(self, config: ClusterConfig) -> None:
        super().__init__(config)
        self.slurm = FakeSlurm()
        self.held: set[str] = set()
        self.cancelled: list[str] = []

    def accounting_sync(self) -> AccountingSync:
        return self.slurm

    async def hold(self, scheduler_ids: Sequence[str]) -> None:
        self.slurm._check()
        self.held.update(scheduler_ids)

    async def release(self, scheduler_ids: Sequence[str]) -> None:
        self.slurm._check()
        self.held.difference_update(scheduler_ids)

    async def cancel(self, identity: Identity, scheduler_id: str) -> None:
        self.cancelled.append(scheduler_id)

    async def health(self) -> Health:
        up = not self.slurm.down
        return Health(cluster=self.name, ok=up, detail="up" if up else "refused",
                      latency_ms=1.0)

    async def submit(self, *args: object) -> object:  # type: ignore[override]
        raise NotImplementedError

    states = accounting = find_by_marker = read_output = submit  # type: ignore[assignment]
    put_file = get_file = list_files = submit  # type: ignore[assignment]


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    return ClusterConfig(
        name="meso", backend="slurm_ssh", known_hosts=tmp_path / "known_hosts",
        admin=IdentityConfig(unix_user="hpcgw", key_file=tmp_path / "admin"),
        identities={"acme": IdentityConfig(unix_user="acme", key_file=tmp_path / "acme")},
        partitions=[PartitionConfig(name="gpu", max_time_minutes=60, max_cpus_per_job=8,
                                    max_mem_mb_per_job=1000,
                                    billing=BillingWeights(gpu=1, cpu=0.25, mem_gb=0.0625))])


@pytest.fixture
def cluster(config: ClusterConfig) -> FakeCluster:
    return FakeCluster(config)


@pytest.fixture
def gateway_settings(settings: Settings, config: ClusterConfig) -> Settings:
    return settings.model_copy(update={"clusters": [config]})


@pytest.fixture
def member(database: Database) -> Member:
    with database.transaction() as session:
        member = make_member(session, "acme")
        now = utcnow()
        quotas.grant(session, member_id=member.id, amount_msu=10_000, kind=AllocationKind.grant,
                     starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30),
                     actor=ACTOR)
        return member


IDENTITY = IdentityIn(cluster="meso", unix_user="acme", slurm_account="acme_acct",
                      ssh_key_ref="acme")


def _add(database: Database, settings: Settings, slug: str = "acme") -> None:
    with database.transaction() as session:
        found = service.get_member(session, ACTOR, slug)
        service.add_identity(session, ACTOR, found, IDENTITY, settings.clusters,
                             context=CLI_CONTEXT)


def _status(database: Database, slug: str, status: MemberStatus) -> None:
    with database.transaction() as session:
        found = service.get_member(session, ACTOR, slug)
        service.update_member(session, ACTOR, found, MemberUpdate(status=status),
                              context=CLI_CONTEXT)


def _identity(database: Database) -> ClusterIdentity:
    with database.transaction(write=False) as session:
        return session.scalars(select(ClusterIdentity).where(
            ClusterIdentity.cluster == "meso")).one()


def _provision(database: Database, settings: Settings, cluster: FakeCluster) -> list[str]:
    done = anyio.run(lambda: provision(database, settings, {"meso": cluster}, cluster="meso"))
    return [p.state for p in done]


def test_an_identity_becomes_an_account_with_the_ledgers_limit_once_committed(
        database: Database, gateway_settings: Settings, cluster: FakeCluster,
        member: Member) -> None:
    _add(database, gateway_settings)
    assert _identity(database).provisioning == "pending"
    assert cluster.slurm.associations == set()  # nothing before the commit's provisioning
    assert _provision(database, gateway_settings, cluster) == ["provisioned"]
    assert cluster.slurm.associations == {("acme_acct", "acme")}
    limits = cluster.slurm.limits["acme_acct"]
    # the backstop's figure: (10 SU granted + 10% margin) at 1000 billing per SU/h, in minutes
    assert limits.grp_billing_minutes == 11 * 1000 * 60 and not limits.blocked
    assert _identity(database).provisioning == "provisioned"
    assert _provision(database, gateway_settings, cluster) == []  # nothing left pending


def test_a_cluster_unreachable_leaves_it_pending_until_the_trackers_turn(
        database: Database, gateway_settings: Settings, cluster: FakeCluster,
        member: Member) -> None:
    cluster.slurm.down = True
    _add(database, gateway_settings)
    assert _provision(database, gateway_settings, cluster) == ["pending"]
    identity = _identity(database)
    assert identity.provisioning == "pending"
    assert identity.slurm_error == "SchedulerUnavailable: connection refused"

    cluster.slurm.down = False
    jobs = JobsSettings(health_interval_seconds=0.001)
    install_provisioning()  # as the app's lifespan and `hpcgw tracker` do
    status = anyio.run(lambda: observe(database, Cluster(cluster.config, cluster), jobs))
    assert status is not None and status.reachable
    assert _identity(database).provisioning == "provisioned"
    assert cluster.slurm.associations == {("acme_acct", "acme")}
    with database.transaction(write=False) as session:
        health = session.get_one(ClusterHealth, "meso")
        assert health.reachable and health.detail == "up"


def _queued_job(database: Database, member: Member, scheduler_id: str) -> None:
    with database.transaction() as session:
        project = make_project(session, session.get_one(Member, member.id))
        user = make_user(session)
        session.add(Job(public_id=f"job{scheduler_id}", member_id=member.id,
                        project_id=project.id, user_id=user.id, cluster="meso", name="queued",
                        state=JobState.pending, marker=f"m{scheduler_id}",
                        scheduler_id=scheduler_id, partition="gpu", resources={}, script="",
                        stdout_path="o", stderr_path="e", billing={}, quote_msu=1))


def test_suspension_blocks_and_holds_reactivation_lifts_both(
        database: Database, gateway_settings: Settings, cluster: FakeCluster,
        member: Member) -> None:
    _add(database, gateway_settings)
    _provision(database, gateway_settings, cluster)
    _queued_job(database, member, "4242")

    _status(database, "acme", MemberStatus.suspended)
    assert _identity(database).provisioning == "pending"
    assert _provision(database, gateway_settings, cluster) == ["provisioned"]
    assert cluster.slurm.limits["acme_acct"].blocked and cluster.held == {"4242"}

    _status(database, "acme", MemberStatus.active)
    assert _provision(database, gateway_settings, cluster) == ["provisioned"]
    assert not cluster.slurm.limits["acme_acct"].blocked and cluster.held == set()


def test_suspension_cancels_queued_jobs_when_the_setting_says_so(
        database: Database, gateway_settings: Settings, cluster: FakeCluster,
        member: Member) -> None:
    cancelling = gateway_settings.model_copy(
        update={"jobs": JobsSettings(suspended_jobs="cancel")})
    _add(database, cancelling)
    _provision(database, cancelling, cluster)
    _queued_job(database, member, "4243")
    _status(database, "acme", MemberStatus.suspended)
    assert _provision(database, cancelling, cluster) == ["provisioned"]
    assert cluster.cancelled == ["4243"] and cluster.held == set()
    assert cluster.slurm.limits["acme_acct"].blocked


def test_a_removed_identity_is_blocked_never_deleted_and_takes_no_job(
        database: Database, gateway_settings: Settings, cluster: FakeCluster,
        member: Member) -> None:
    _add(database, gateway_settings)
    _provision(database, gateway_settings, cluster)
    with database.transaction() as session:
        found = service.get_member(session, ACTOR, "acme")
        service.remove_identity(session, ACTOR, found, "meso", context=CLI_CONTEXT)
    assert _provision(database, gateway_settings, cluster) == ["provisioned"]
    assert _identity(database).provisioning == "removed"
    assert cluster.slurm.limits["acme_acct"].blocked
    assert cluster.slurm.associations == {("acme_acct", "acme")}
    with database.transaction(write=False) as session, pytest.raises(Conflict):
        account_and_active_jobs(session, member.id, "meso")
    # the same account added back is restored, and unblocked
    _add(database, gateway_settings)
    assert _provision(database, gateway_settings, cluster) == ["provisioned"]
    assert not cluster.slurm.limits["acme_acct"].blocked


def test_the_demos_local_cluster_takes_an_identity_a_login_cluster_refuses(
        session: Session, tmp_path: Path, config: ClusterConfig) -> None:
    member = Member(slug="demo", name="Demo", kind=MemberKind.research, identities=[])
    session.add(member)
    session.flush()
    local = IdentityIn(cluster="local", unix_user="demo", slurm_account="demo",
                       ssh_key_ref="local")
    service.add_identity(session, ACTOR, member, local, [local_cluster(tmp_path)],
                         context=CLI_CONTEXT)
    with pytest.raises(InvalidInput, match="no identity 'local'"):
        service.add_identity(session, ACTOR, member, local.model_copy(
            update={"cluster": "meso"}), [config], context=CLI_CONTEXT)


@pytest.fixture
def clusters_client(gateway_settings: Settings, database: Database) -> Iterator[TestClient]:
    with TestClient(create_app(gateway_settings, database=database, schedulers={})) as client:
        yield client


def test_clusters_show_partitions_rates_and_the_health_last_recorded(
        clusters_client: TestClient, database: Database, settings: Settings) -> None:
    from factories import auth_headers

    with database.transaction() as session:
        user = make_user(session)
    headers = auth_headers(settings, user)
    body = clusters_client.get("/api/v1/clusters", headers=headers).json()
    assert [c["name"] for c in body] == ["meso"] and body[0]["health"] is None
    gpu = body[0]["partitions"][0]
    assert gpu["max_cpus_per_job"] == 8 and gpu["rate"]["per_cpu_hour"]["msu"] == 250
    with database.transaction() as session:
        session.add(ClusterHealth(cluster="meso", checked_at=utcnow(), reachable=True,
                                  slurmctld=True, slurmdbd=False, detail="dbd down"))
    one = clusters_client.get("/api/v1/clusters/meso", headers=headers).json()
    assert one["health"]["slurmctld"] is True and one["health"]["slurmdbd"] is False
    assert clusters_client.get("/api/v1/clusters/nope", headers=headers).status_code == 404
    sync = clusters_client.post("/api/v1/clusters/meso/sync", headers=headers)
    assert sync.status_code == 403  # admins only
