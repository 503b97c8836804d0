"""The demo's data directory and consortium: made once, kept, never duplicated.

Seeding hashes seven passwords (argon2, about 0.8 s each here): the tests seed as few times as
they can and check several things each.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from consortium.models import (
    AuditEvent,
    ClusterIdentity,
    Member,
    Membership,
    Project,
    User,
)
from consortium.passwords import verify_password
from gateway import demo
from gateway.db import Database
from gateway.jobs.clusters import identity_for
from quotas.models import Allocation, LedgerEntry
from schedulers.config import IdentityConfig

COUNTED = (Member, User, Membership, Project, ClusterIdentity, Allocation, LedgerEntry,
           AuditEvent)


def _counts(database: Database) -> dict[str, int]:
    with database.session() as session:
        return {m.__name__: session.scalar(select(func.count()).select_from(m)) or 0
                for m in COUNTED}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_seeding_twice_keeps_the_data_and_adds_nothing(fresh_database: Database,
                                                       tmp_path: Path) -> None:
    first = demo.seed(fresh_database, tmp_path)
    counts = _counts(fresh_database)
    second = demo.seed(fresh_database, tmp_path)

    assert _counts(fresh_database) == counts
    assert second == first
    assert counts["Member"] == 3
    assert counts["User"] == 7  # one admin, a manager and a researcher per member
    assert counts["Membership"] == 6
    assert counts["ClusterIdentity"] == 3
    assert counts["Allocation"] == 3
    assert counts["Project"] >= 3
    with fresh_database.session() as session:
        kinds = dict(session.execute(select(Member.slug, Member.kind)).all())
        identities = session.scalars(select(ClusterIdentity)).all()
    assert kinds == {"3m": "public_body", "lirmm-ai": "research",
                     "occitanie-robotics": "company"}
    for identity in identities:
        assert (identity.cluster, identity.ssh_key_ref) == (demo.LOCAL_CLUSTER, "local")
        IdentityConfig(unix_user=identity.unix_user, key_file=Path("local"))  # a valid Unix name


def test_the_printed_logins_get_a_token_and_are_kept_readable_by_the_owner_only(
    app_client: TestClient, database: Database, tmp_path: Path
) -> None:
    logins = demo.seed(database, tmp_path)

    credentials = tmp_path / demo.CREDENTIALS_FILE
    assert _mode(credentials) == 0o600
    assert json.loads(credentials.read_text()) == {c.email: c.password for c in logins}
    assert [c.role for c in logins].count("admin") == 1
    for login in (logins[0], logins[-1]):  # the admin and a company's researcher
        response = app_client.post("/api/v1/auth/token", data={
            "grant_type": "password", "username": login.email, "password": login.password})
        assert response.status_code == 200, response.text
        me = app_client.get("/api/v1/me", headers={
            "Authorization": f"Bearer {response.json()['access_token']}"})
        assert me.json()["is_admin"] == (login.role == "admin")


def test_a_password_lost_from_the_file_is_replaced_by_one_that_works(database: Database,
                                                                     tmp_path: Path) -> None:
    old = {c.email: c.password for c in demo.seed(database, tmp_path)}
    lost = "karim.haddad@lirmm-ai.example.org"
    credentials = tmp_path / demo.CREDENTIALS_FILE
    credentials.write_text(json.dumps({k: v for k, v in old.items() if k != lost}))

    new = {c.email: c.password for c in demo.seed(database, tmp_path)}

    assert new[lost] != old[lost]
    assert {k: v for k, v in new.items() if k != lost} == {
        k: v for k, v in old.items() if k != lost}
    with database.session() as session:
        user = session.scalars(select(User).where(User.email == lost)).one()
        assert verify_password(user.password_hash, new[lost])


def test_the_signing_key_is_made_once_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    key = demo.read_or_create_secret(tmp_path)

    assert demo.read_or_create_secret(tmp_path) == key
    assert len(key) >= 32
    assert _mode(tmp_path / demo.SIGNING_KEY_FILE) == 0o600


def test_a_signing_key_file_cut_short_is_replaced(tmp_path: Path) -> None:
    (tmp_path / demo.SIGNING_KEY_FILE).write_text("abc")

    assert len(demo.read_or_create_secret(tmp_path)) >= 32


def test_member_slugs_become_valid_unix_names() -> None:
    assert demo.unix_name("3m") == "m3m"
    assert demo.unix_name("occitanie-robotics") == "occitanie-robotics"
    assert re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", demo.unix_name("Ville.de-Sète" * 4))


def test_the_local_cluster_and_its_work_roots_live_in_the_data_directory(
    tmp_path: Path,
) -> None:
    cluster = demo.local_cluster(tmp_path)
    account = ClusterIdentity(cluster="local", unix_user="m3m", slurm_account="m3m",
                              ssh_key_ref="local")

    assert cluster.backend == "local"
    assert cluster.local_root == tmp_path.resolve() / "local-cluster"
    assert Path(identity_for(cluster, account).work_root).is_relative_to(cluster.local_root)
    cpu, gpu = cluster.partition("cpu"), cluster.partition("gpu")
    assert cpu is not None and gpu is not None
    assert (cpu.max_cpus_per_job, cpu.max_mem_mb_per_job, cpu.max_time_minutes) == (8, 16384, 1440)
    assert (cpu.billing.cpu, cpu.billing.mem_gb) == (0.25, 0.0625)
    assert (gpu.max_gpus_per_job, gpu.billing.gpu) == (4, 1.0)
