"""The embedded demo: a data directory with its own secret, a local cluster, and a small
consortium (Montpellier's Métropole, a university AI lab, a regional company) seeded once."""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortium import service
from consortium.audit import CLI_CONTEXT, record
from consortium.base import utcnow
from consortium.errors import NotFound
from consortium.models import Domain, Member, MemberKind, Membership, Role, User
from consortium.passwords import hash_password
from consortium.schemas import (
    IdentityIn,
    InvitationAccept,
    InvitationCreate,
    MemberCreate,
    ProjectCreate,
    UserCreate,
)
from gateway.auth.principal import principal_for_user
from gateway.db import Database
from gateway.demo_history import HISTORY, seed_history
from gateway.settings import MIN_SECRET_LENGTH
from quotas import service as quotas
from quotas.models import AllocationKind
from schedulers.config import BillingWeights, ClusterConfig, Hardware, PartitionConfig

SIGNING_KEY_FILE = "secret_key"
CREDENTIALS_FILE = "demo-credentials.json"
LOCAL_CLUSTER = "local"
ACTOR = "demo"  # the operator of this host, as the audit trail names it
GRANT_PERIOD = timedelta(days=365)


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    role: Role


@dataclass(frozen=True)
class ProjectSeed:
    slug: str
    name: str
    domain: Domain
    description: str


@dataclass(frozen=True)
class MemberSeed:
    slug: str
    name: str
    kind: MemberKind
    people: tuple[Person, ...]  # the first is the member's contact
    projects: tuple[ProjectSeed, ...]
    grant_su: int  # hours granted for the demo's year


@dataclass(frozen=True)
class Credential:
    email: str
    password: str
    role: str  # admin, manager or researcher
    member: str | None


ADMIN_EMAIL, ADMIN_NAME = "admin@consortium.example.org", "Administration du consortium"

MEMBERS = (
    MemberSeed(
        "3m", "Montpellier Méditerranée Métropole", MemberKind.public_body,
        people=(
            Person("camille.roux@3m.example.org", "Camille Roux", Role.manager),
            Person("julien.garcia@3m.example.org", "Julien Garcia", Role.researcher),
        ),
        projects=(
            ProjectSeed("affluence-tram", "Prévision d'affluence du tramway", Domain.mobility,
                        "Forecast tram ridership per line and hour from ticketing data."),
            ProjectSeed("assistant-usagers", "Assistant des demandes des usagers",
                        Domain.public_services,
                        "Route residents' requests to the right municipal service."),
        ),
        grant_su=500,
    ),
    MemberSeed(
        "lirmm-ai", "Université de Montpellier — laboratoire IA", MemberKind.research,
        people=(
            Person("sophie.bernard@lirmm-ai.example.org", "Sophie Bernard", Role.manager),
            Person("karim.haddad@lirmm-ai.example.org", "Karim Haddad", Role.researcher),
        ),
        projects=(
            ProjectSeed("llm-occitan", "Modèle de langue pour l'occitan", Domain.research,
                        "Fine-tune an open language model on Occitan corpora."),
        ),
        grant_su=2000,
    ),
    MemberSeed(
        "occitanie-robotics", "Occitanie Robotics", MemberKind.company,
        people=(
            Person("lea.fabre@occitanie-robotics.example.org", "Léa Fabre", Role.manager),
            Person("thomas.vidal@occitanie-robotics.example.org", "Thomas Vidal",
                   Role.researcher),
        ),
        projects=(
            ProjectSeed("tri-dechets", "Vision pour le tri des déchets",
                        Domain.ecological_transition,
                        "Detect recyclable materials on a sorting line's camera images."),
        ),
        grant_su=1000,
    ),
)


def read_or_create_secret(data_dir: Path) -> str:
    """The demo's signing key, made once: tokens stay valid across restarts."""
    path = data_dir / SIGNING_KEY_FILE
    if path.is_file():
        secret = path.read_text().strip()
        if len(secret) >= MIN_SECRET_LENGTH:  # else a write was cut short: make a new one
            return secret
    secret = secrets.token_urlsafe(48)
    _write_private(path, secret + "\n")
    return secret


def local_cluster(data_dir: Path) -> ClusterConfig:
    """The built-in local executor, with the partitions a small GPU cluster would have."""
    day = 24 * 60
    return ClusterConfig(
        name=LOCAL_CLUSTER,
        backend="local",
        local_root=data_dir.resolve() / "local-cluster",
        work_root="members/{unix_user}",  # relative: under local_root
        # slots are counted, not pinned to cores: jobs up to the partitions' 8 CPUs can run
        cpu_slots=8,
        partitions=[
            PartitionConfig(name="cpu", max_time_minutes=day, max_cpus_per_job=8,
                            max_mem_mb_per_job=16 * 1024,
                            billing=BillingWeights(gpu=1.0, cpu=0.25, mem_gb=0.0625),
                            hardware=Hardware(watts_per_core=12.0)),
            # a job that takes all the partition's CPUs or memory pays for its 4 GPUs: the
            # node is as busy as if it had taken them
            PartitionConfig(name="gpu", max_time_minutes=day, max_cpus_per_job=8,
                            max_gpus_per_job=4, max_mem_mb_per_job=128 * 1024,
                            billing=BillingWeights(gpu=1.0, cpu=0.5, mem_gb=0.03125),
                            # footprint figures (docs/sustainability.md): A100 SXM4 nodes
                            hardware=Hardware(watts_per_core=12.0, gpu_model="a100-sxm4")),
        ],
    )


def unix_name(slug: str) -> str:
    """A member slug as a Unix account name: lower case, and a letter first ("3m" -> "m3m")."""
    name = re.sub(r"[^a-z0-9_-]", "-", slug.lower())
    return (name if re.match(r"[a-z_]", name) else "m" + name)[:32]


def seed(database: Database, data_dir: Path) -> list[Credential]:
    """Create whatever of the demo consortium is missing, and return every demo login.

    Everything goes through the consortium's and the quotas' services, as an operator's
    commands would, so the audit trail tells how the demo came to be. Passwords are drawn on
    first use and kept in the data directory (mode 600) so that a later run prints them again;
    a demo user whose password was lost from that file gets a new one.
    """
    credentials_path = data_dir / CREDENTIALS_FILE
    known: dict[str, str] = (
        json.loads(credentials_path.read_text()) if credentials_path.is_file() else {}
    )
    logins: list[Credential] = []
    with database.transaction() as session:
        if _user_with_password(session, ADMIN_EMAIL, known) is None:
            service.create_user(session, ACTOR, UserCreate(
                email=ADMIN_EMAIL, name=ADMIN_NAME, password=known[ADMIN_EMAIL], is_admin=True,
            ), context=CLI_CONTEXT)
        logins.append(Credential(ADMIN_EMAIL, known[ADMIN_EMAIL], "admin", None))
        for spec in MEMBERS:
            member = _ensure_member(session, spec, local_cluster(data_dir))
            for person in spec.people:
                _ensure_membership(session, member, person, known)
                logins.append(Credential(person.email, known[person.email], person.role.value,
                                         spec.slug))
            people = list(session.scalars(select(User).where(
                User.email_normalized.in_([p.email.lower() for p in spec.people]))))
            seed_history(session, member, people, local_cluster(data_dir), utcnow())
        _write_private(credentials_path, json.dumps(known, indent=2) + "\n")
    return logins


def _ensure_member(session: Session, spec: MemberSeed, cluster: ClusterConfig) -> Member:
    try:
        member = service.get_member(session, ACTOR, spec.slug)
    except NotFound:
        member = service.create_member(session, ACTOR, MemberCreate(
            slug=spec.slug, name=spec.name, kind=spec.kind, contact_name=spec.people[0].name,
            contact_email=spec.people[0].email,
        ), clusters=(), context=CLI_CONTEXT)
    if not any(identity.cluster == LOCAL_CLUSTER for identity in member.identities):
        account = unix_name(spec.slug)
        # checked as the API and the CLI check it: the local cluster names no identity, its
        # jobs run as the gateway's own user, so any key ref will do
        service.add_identity(session, ACTOR, member, IdentityIn(
            cluster=LOCAL_CLUSTER, unix_user=account, slurm_account=account, ssh_key_ref="local",
        ), clusters=(cluster,), context=CLI_CONTEXT)
    for project in spec.projects:
        try:
            service.get_project(session, ACTOR, member, project.slug)
        except NotFound:
            service.create_project(session, ACTOR, member, ProjectCreate(
                slug=project.slug, name=project.name, domain=project.domain,
                description=project.description,
            ), context=CLI_CONTEXT)
    # begun before the demo's past jobs (gateway.demo_history); the idempotency key makes the
    # grant once-only, like everything else here
    starts = utcnow() - HISTORY
    quotas.grant(session, member_id=member.id, amount_msu=spec.grant_su * 1000,
                 kind=AllocationKind.grant, starts_at=starts, ends_at=starts + GRANT_PERIOD,
                 actor=ACTOR, note="demo allocation", context=CLI_CONTEXT,
                 idempotency_key=f"demo-{spec.slug}")
    return member


def _ensure_membership(session: Session, member: Member, person: Person,
                       known: dict[str, str]) -> None:
    """The person joins the member the way people do: invited, then accepting."""
    user = _user_with_password(session, person.email, known)
    if user is not None and session.get(Membership, (user.id, member.id)) is not None:
        return
    _, token = service.create_invitation(
        session, ACTOR, member, InvitationCreate(email=person.email, role=person.role),
        ttl=timedelta(hours=1), context=CLI_CONTEXT)
    if user is None:
        service.accept_invitation(session, token, InvitationAccept(
            name=person.name, password=known[person.email]), context=CLI_CONTEXT)
    else:  # an account joins signed in as itself, as a person would
        service.accept_invitation(session, token, InvitationAccept(),
                                  signed_in=principal_for_user(session, user), context=CLI_CONTEXT)


def _user_with_password(session: Session, email: str, known: dict[str, str]) -> User | None:
    """The user if it exists, with known[email] as its password (drawn now if there is none)."""
    drawn = email not in known
    if drawn:
        known[email] = secrets.token_urlsafe(12)
    user = session.scalar(select(User).where(User.email_normalized == email.lower()))
    if user is not None and drawn:  # the password file was lost: the password printed must work
        user.password_hash = hash_password(known[email])
        record(session, actor=ACTOR, action="user.password_reset", target_type="user",
               target_id=user.id, context=CLI_CONTEXT,
               details={"reason": "demo password file lost"})
    return user


def _write_private(path: Path, text: str) -> None:
    """Replace the file atomically; readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    tmp.replace(path)
