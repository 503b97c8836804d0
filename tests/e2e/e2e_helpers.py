"""Helpers of the end-to-end tests: the cast on the test cluster, following a job through the
API, and what Slurm and the ledger say, read without the code under test (OpenSSH as the
cluster's admin, SQL on the gateway's database)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
from factories import make_project, make_user
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.base import utcnow
from consortium.models import ClusterIdentity, Member, MemberKind, Project, Role, User
from gateway.db import Database
from gateway.jobs.models import TERMINAL_STATES
from quotas import service as quotas
from quotas.models import AllocationKind, EntryKind, Hold, HoldState, LedgerEntry

if TYPE_CHECKING:
    from testcluster_helpers import Cluster

TORCH_PYTHON = "/opt/hpcgw-torch/bin/python"  # scripts/torch-env.sh
PARTITION = "debug"
GRANT_SU = 100
ENDED = frozenset(state.value for state in TERMINAL_STATES)


@dataclass
class World:
    """Two members, each on its own account of the test cluster, a researcher and a project
    each, and 100 SU each."""

    alpha: Member
    beta: Member
    alpha_project: Project
    beta_project: Project
    alice: User  # alpha's researcher
    bob: User  # beta's researcher


def member_on_cluster(session: Session, testcluster: Cluster, who: str) -> Member:
    """A member whose cluster identity is the test cluster's ALPHA or BETA account (the key is
    the configuration's identity of that name)."""
    slug = f"e2e-{who.lower()}"
    member = Member(slug=slug, name=f"E2E {who.title()}", kind=MemberKind.research,
                    contact_email=f"ops@{slug}.test")
    session.add(member)
    session.flush()
    session.add(ClusterIdentity(member_id=member.id, cluster=testcluster["CLUSTER"],
                                unix_user=testcluster[f"{who}_USER"],
                                slurm_account=testcluster[f"{who}_ACCOUNT"],
                                ssh_key_ref=who.lower(),
                                # testcluster.sh made the account: nothing to provision
                                slurm_synced_generation=1))
    now = utcnow()
    quotas.grant(session, member_id=member.id, amount_msu=GRANT_SU * 1000,
                 kind=AllocationKind.grant, starts_at=now - timedelta(days=1),
                 ends_at=now + timedelta(days=30), actor="admin@consortium.test")
    session.flush()
    return member


def make_world(database: Database, testcluster: Cluster) -> World:
    with database.transaction() as session:
        alpha = member_on_cluster(session, testcluster, "ALPHA")
        beta = member_on_cluster(session, testcluster, "BETA")
        return World(
            alpha=alpha, beta=beta,
            alpha_project=make_project(session, alpha, "training"),
            beta_project=make_project(session, beta, "inference"),
            alice=make_user(session, email="alice@alpha.test", roles={alpha: Role.researcher}),
            bob=make_user(session, email="bob@beta.test", roles={beta: Role.researcher}),
        )


def script_job(project: Project, script: str, *, name: str = "e2e",
               time_limit_minutes: int = 5, **resources: Any) -> dict[str, Any]:
    return {"project": project.id, "name": name, "script": script,
            "resources": {"partition": PARTITION, "mem_mb": 256,
                          "time_limit_minutes": time_limit_minutes, **resources}}


def wait_for(what: str, check: Callable[[], Any], *, within: float,
             every: float = 0.25) -> Any:
    """check() until it returns something true; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {within:.0f} s")
        time.sleep(every)


def until_ended(client: httpx.Client, auth: dict[str, str], public_id: str, *,
                within: float = 90) -> dict[str, Any]:
    """The job, once the gateway's tracker has recorded its end (read through the API)."""
    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{public_id}", headers=auth).json()
        return job if job["state"] in ENDED else None
    result: dict[str, Any] = wait_for(f"job {public_id} ended", ended, within=within)
    return result


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of a server-sent event stream's text."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


# --- what the cluster says (OpenSSH as the admin, not the gateway's code) -------------------

def slurm_jobs_with_marker(testcluster: Cluster, marker: str) -> set[str]:
    """Every Slurm job carrying `marker` as its comment: in the controller's queue (recent
    ones included) or in the accounting."""
    found = testcluster.shell(
        "ADMIN", "squeue -a --noheader --states=all --format='%i|%k'; "
        "sacct -a -X --parsable2 --noheader --starttime=now-1days --format=JobIDRaw,Comment")
    assert found.returncode == 0, found.stderr
    return {job_id for job_id, _, comment in
            (line.partition("|") for line in found.stdout.splitlines())
            if comment == marker}


@dataclass(frozen=True)
class SlurmAccounting:
    alloc_tres: dict[str, str]
    elapsed_seconds: int
    state: str


def slurm_accounting(testcluster: Cluster, job_id: str) -> SlurmAccounting:
    done = testcluster.shell("ADMIN", f"sacct -X -n -P -j {int(job_id)} "
                                      "-o AllocTRES,ElapsedRaw,State")
    assert done.returncode == 0, done.stderr
    tres, elapsed, state = done.stdout.strip().split("|")
    return SlurmAccounting(dict(item.split("=", 1) for item in tres.split(",")),
                           int(elapsed), state)


def mem_mb(value: str) -> int:
    """sacct's memory TRES (`2G`, `300M`) in MiB."""
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2}
    return round(float(value[:-1]) * units[value[-1]])


# --- what the ledger says -------------------------------------------------------------------

def ledger_kinds(database: Database, public_id: str) -> list[EntryKind]:
    with database.transaction(write=False) as session:
        return list(session.scalars(select(LedgerEntry.kind)
                                    .where(LedgerEntry.job_id == public_id)
                                    .order_by(LedgerEntry.id)))


def charges(database: Database, public_id: str) -> list[int]:
    """The charge entries of a job (amounts as charged, positive)."""
    with database.transaction(write=False) as session:
        return [-amount for amount in session.scalars(
            select(LedgerEntry.amount_msu).where(LedgerEntry.job_id == public_id,
                                                 LedgerEntry.kind == EntryKind.charge))]


def hold_state(database: Database, public_id: str) -> HoldState:
    with database.transaction(write=False) as session:
        return session.scalars(select(Hold.state).where(Hold.job_id == public_id)).one()


def open_holds(database: Database) -> int:
    with database.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(Hold)
                              .where(Hold.state == HoldState.open)) or 0
