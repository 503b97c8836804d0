"""The authenticator's kept callers (gateway.auth.authenticator): each change named in
EPOCH_TRIGGERS ends them at once, the database holds exactly those triggers, other changes keep
them, and callers that miss together are read once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from factories import make_member, make_user
from sqlalchemy import text
from sqlalchemy.orm import Session

from consortium.authz import Principal
from consortium.base import utcnow
from consortium.models import AccessToken, Membership, Role
from gateway.auth import authenticator as module
from gateway.auth.authenticator import EPOCH_TRIGGERS, Authenticator
from gateway.auth.principal import read_principal
from gateway.auth.sessions import issue_access_token
from gateway.db import Database
from gateway.loop_reads import LoopReads
from gateway.settings import Settings


@dataclass(frozen=True)
class Rows:
    """A caller, and rows of somebody else's to change: the epoch is the whole database's."""

    credential: str
    user: int  # another user, with a membership in `member` and a token
    member: int
    token: int
    lone_user: int  # a user and a member with nothing else
    lone_member: int


@pytest.fixture
def rows(fresh_database: Database, settings: Settings) -> Rows:
    with fresh_database.transaction() as session:
        caller = make_user(session, roles={make_member(session): Role.researcher})
        member = make_member(session)
        user = make_user(session, roles={member: Role.researcher})
        token = AccessToken(user_id=user.id, name="spare", token_hash="0" * 64,
                            display_prefix="hpcgw_pat_0000…", scopes=["jobs:read"])
        session.add(token)
        lone_user, lone_member = make_user(session), make_member(session)
        session.flush()
        return Rows(issue_access_token(settings, caller.id), user.id, member.id, token.id,
                    lone_user.id, lone_member.id)


@pytest.fixture
def authenticator(fresh_database: Database, settings: Settings) -> Iterator[Authenticator]:
    loop_reads = LoopReads(fresh_database)
    yield Authenticator(fresh_database, settings, loop_reads, oidc=None)
    loop_reads.close()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The credentials read from the database (a kept caller is not read)."""
    done: list[str] = []
    def counted(session: Session, credential: str, *args: Any) -> Any:
        done.append(credential)
        return read_principal(session, credential, *args)

    monkeypatch.setattr(module, "read_principal", counted)
    return done


_WHERE = {"access_tokens": "id = :token", "users": "id = :user",
          "memberships": "user_id = :user", "members": "id = :member"}


def _changes() -> Iterator[tuple[str, str, str]]:
    """(table, trigger event, statement) for each change the rule names; an `UPDATE OF` once
    per column (the column set to itself: the trigger fires on what is written, not on what
    differs)."""
    for table, events in EPOCH_TRIGGERS.items():
        for event in events:
            if event == "INSERT":
                yield table, event, "INSERT"
            elif event == "DELETE":
                yield table, event, f"DELETE FROM {table} WHERE {_WHERE[table]}"  # noqa: S608
            else:
                columns = event.removeprefix("UPDATE OF ").split(", ") if " OF " in event else [
                    {"memberships": "role"}[table]]
                for column in columns:
                    yield (table, event,  # names of the rule, not input
                           f"UPDATE {table} SET {column} = {column} WHERE {_WHERE[table]}")  # noqa: S608


def _apply(database: Database, rows: Rows, statement: str) -> None:
    with database.transaction() as session:
        if statement == "INSERT":  # the only insert named: a membership
            session.add(Membership(user_id=rows.lone_user, member_id=rows.lone_member,
                                   role=Role.viewer))
        else:
            session.execute(text(statement), {"user": rows.user, "member": rows.member,
                                              "token": rows.token})


def _kept_then_changed(authenticator: Authenticator, change: Callable[[], None],
                       credential: str) -> tuple[Principal, Principal, Principal]:
    """The caller read, asked again, then asked once more after `change`, on one event loop
    (the epoch read on the loop's own connection, as routes do)."""
    async def run() -> tuple[Principal, Principal, Principal]:
        first = await authenticator.caller(credential)
        again = await authenticator.caller(credential)
        change()
        return first, again, await authenticator.caller(credential)
    return anyio.run(run)


@pytest.mark.parametrize(("table", "event", "statement"), list(_changes()))
def test_each_named_change_ends_a_kept_caller_at_once(
    *, fresh_database: Database, authenticator: Authenticator, rows: Rows, reads: list[str],
    table: str, event: str, statement: str,
) -> None:
    first, again, after = _kept_then_changed(
        authenticator, lambda: _apply(fresh_database, rows, statement), rows.credential)
    assert again is first  # kept
    assert after is not first and after == first  # read again (and unchanged: not its rows)
    assert reads == [rows.credential] * 2, (table, event)


@pytest.mark.parametrize("statement", [
    "UPDATE users SET name = 'renamed' WHERE id = :user",
    "UPDATE access_tokens SET last_used_at = NULL WHERE id = :token",
    "UPDATE members SET name = 'renamed' WHERE id = :member",
])
def test_a_change_to_nothing_a_principal_is_made_of_keeps_the_caller(
    *, fresh_database: Database, authenticator: Authenticator, rows: Rows, reads: list[str],
    statement: str,
) -> None:
    first, _, after = _kept_then_changed(
        authenticator, lambda: _apply(fresh_database, rows, statement), rows.credential)
    assert after is first
    assert reads == [rows.credential]


def _installed_triggers(database: Database) -> dict[str, set[str]]:
    """table -> the statements that bump the auth epoch, as the database holds them."""
    found: dict[str, set[str]] = {}
    with database.transaction() as session:
        if database.dialect == "postgresql":
            definitions = session.execute(text(
                "SELECT c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE p.proname = 'hpcgw_bump_auth_epoch'")).all()
            for table, definition in definitions:
                events = definition.split(" AFTER ", 1)[1].split(" ON ", 1)[0]
                found[table] = set(events.split(" OR "))
        else:
            for table, sql in session.execute(text(
                    "SELECT tbl_name, sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND sql LIKE '%UPDATE auth_epoch SET value = value + 1%'")).all():
                found.setdefault(table, set()).add(
                    sql.split(" AFTER ", 1)[1].split(f" ON {table}", 1)[0])
    return found


def test_the_database_bumps_the_epoch_on_exactly_the_changes_named_by_the_rule(
    fresh_database: Database,
) -> None:
    assert _installed_triggers(fresh_database) == {
        table: set(events) for table, events in EPOCH_TRIGGERS.items()}


def test_callers_that_miss_together_are_read_once(
    authenticator: Authenticator, rows: Rows, reads: list[str],
) -> None:
    async def together() -> list[Principal]:
        found: list[Principal] = []

        async def ask() -> None:
            found.append(await authenticator.caller(rows.credential))

        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(ask)
        return found

    found = anyio.run(together)
    assert len(found) == 20 and all(p is found[0] for p in found)
    assert reads == [rows.credential]


def test_a_kept_caller_is_read_again_after_its_lifetime(
    authenticator: Authenticator, rows: Rows, reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = authenticator.principal(rows.credential)
    assert authenticator.principal(rows.credential) is first
    assert authenticator.known(rows.credential)
    later = utcnow() + module.PRINCIPAL_LIFETIME
    monkeypatch.setattr(module, "utcnow", lambda: later)
    assert not authenticator.known(rows.credential)
    assert authenticator.principal(rows.credential) is not first
    assert reads == [rows.credential] * 2
