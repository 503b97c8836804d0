"""`hpcgw admin allocation|ledger|quotas`: grant hours, verify the books, keep Slurm in step.

`allocation grant|adjust` and `ledger verify` go over the API as the person logged in, like the
rest of `hpcgw admin` (gateway.cli.admin_mode); with `--local`, and for `quotas sync|drift`
(the host's periodic work, talking to every cluster), each opens its own database from the
settings and pushes Slurm limits only after its transaction has committed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from consortium import service as members
from consortium.errors import DomainError
from consortium.mail import SmtpConfig
from consortium.models import Project
from gateway.backstop import limit_sinks, push_limits
from gateway.cli.admin_mode import MODE, local_actor, needs_local, remote
from gateway.cli.client import API
from gateway.cli.runtime import console, fail, load_settings
from gateway.db import Database
from gateway.settings import Settings
from quotas import backstop, ledger, service, thresholds
from quotas.backstop import DEFAULT_MARGIN, PushResult
from quotas.models import AllocationKind
from quotas.rates import format_su, from_su
from quotas.schemas import LedgerVerificationOut

allocation_app = typer.Typer(help="Members' allocations.", no_args_is_help=True)
ledger_app = typer.Typer(help="The quota ledger.", no_args_is_help=True)
quotas_app = typer.Typer(help="Allocation periods, alerts and Slurm limits.",
                         no_args_is_help=True)



# a callback makes each a group even with one command: `hpcgw admin ledger verify`, not
# `hpcgw admin ledger`
@allocation_app.callback()
def _allocation() -> None:
    """Members' allocations."""


@ledger_app.callback()
def _ledger() -> None:
    """The quota ledger."""


DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
MarginOption = Annotated[str, typer.Option(
    help="Slurm limit above the gateway's hard stop, as a fraction of the open allocations")]


def _database() -> tuple[Settings, Database]:
    settings = load_settings()
    return settings, Database(settings.effective_database_url)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _su(value: str, option: str) -> int:
    try:
        return from_su(Decimal(value))
    except (InvalidOperation, ValueError) as exc:
        fail(f"{option}: {value!r} is not an amount of SU with at most three decimals ({exc})")


def _margin(value: str) -> Fraction:
    try:
        margin = Fraction(value)
    except ValueError:
        fail(f"--margin: {value!r} is not a number")
    if margin < 0:
        fail("--margin cannot be negative")
    return margin


def _report_pushes(results: list[PushResult]) -> None:
    for result in results:
        if result.skipped:
            continue
        target = result.target
        where = f"Slurm limit of {target.account} on {target.cluster}"
        if result.error is None:
            console.print(f"{where}: GrpTRESMins=billing={result.applied_minutes} "
                          f"({format_su(target.limit_msu)})", highlight=False)
        else:
            console.print(f"[yellow]{escape(where)} not pushed[/yellow]: {escape(result.error)}"
                          " (pending: `hpcgw admin quotas sync` retries it)")


@allocation_app.command("grant")
def grant(
    member: Annotated[str, typer.Argument(help="The member's slug.")],
    *,
    su: Annotated[str, typer.Option("--su", help="Hours granted, in SU (3 decimals at most).")],
    ends: Annotated[datetime, typer.Option(formats=DATE_FORMATS,
                                           help="End of the period (UTC unless an offset "
                                                "is given).")],
    starts: Annotated[datetime | None, typer.Option(formats=DATE_FORMATS,
                                                    help="Start of the period [now].")] = None,
    kind: Annotated[AllocationKind, typer.Option()] = AllocationKind.grant,
    project: Annotated[str | None, typer.Option(help="Earmark it to this project (slug).")]
    = None,
    overdraft_su: Annotated[str, typer.Option("--overdraft-su",
                                              help="How far below zero holds may go.")] = "0",
    note: Annotated[str, typer.Option(help="Why (kept on the allocation and its entry).")] = "",
) -> None:
    """Grant hours to a member, then push its Slurm limit."""
    amount, overdraft = _su(su, "--su"), _su(overdraft_su, "--overdraft-su")
    if not MODE.local:
        with remote() as client:
            made = client.call("POST", f"{API}/members/{member}/allocations", json={
                "amount_msu": amount, "kind": kind.value, "overdraft_msu": overdraft,
                "ends_at": _utc(ends).isoformat(), "project": project, "note": note,
                **({"starts_at": _utc(starts).isoformat()} if starts else {})})
        console.print(f"allocation #{made['id']}: {format_su(amount)} ({kind.value}) for "
                      f"{member}", highlight=False)
        return
    settings, database = _database()
    try:
        with database.transaction() as session:
            found = members.get_member(session, local_actor(), member)
            project_id = None
            if project is not None:
                project_id = session.scalar(select(Project.id).where(
                    Project.member_id == found.id, Project.slug == project))
                if project_id is None:
                    fail(f"member '{member}' has no project '{project}'")
            allocation = service.grant(
                session, member_id=found.id, amount_msu=amount, kind=kind,
                starts_at=_utc(starts) if starts else datetime.now(UTC), ends_at=_utc(ends),
                project_id=project_id, overdraft_msu=overdraft, note=note,
                actor=local_actor())
            summary = (f"allocation #{allocation.id}: {format_su(amount)} ({kind.value}) for "
                       f"{member}, {allocation.starts_at:%Y-%m-%d %H:%M} to "
                       f"{allocation.ends_at:%Y-%m-%d %H:%M} UTC")
            member_id = found.id
    except DomainError as exc:
        fail(exc.detail)
    console.print(summary, highlight=False, soft_wrap=True)
    _report_pushes(asyncio.run(push_limits(database, settings.clusters, member_ids=[member_id])))
    database.dispose()


@allocation_app.command("adjust")
def adjust(
    member: Annotated[str, typer.Argument(help="The member's slug.")],
    allocation: Annotated[int, typer.Argument(help="The allocation's id.")],
    *,
    su: Annotated[str, typer.Option("--su", help="SU to add; negative takes hours back.")],
    reason: Annotated[str, typer.Option(help="Why (kept on the ledger entry).")],
) -> None:
    """Correct an allocation's granted hours up or down, then push the member's Slurm limit."""
    amount = _su(su, "--su")
    if not MODE.local:
        with remote() as client:
            client.call("POST", f"{API}/members/{member}/allocations/{allocation}/adjustments",
                        json={"amount_msu": amount, "reason": reason})
    else:
        settings, database = _database()
        try:
            with database.transaction() as session:
                member_id = members.get_member(session, local_actor(), member).id
                service.adjust(session, member_id=member_id, allocation_id=allocation,
                               amount_msu=amount, reason=reason, actor=local_actor())
        except DomainError as exc:
            fail(exc.detail)
        _report_pushes(asyncio.run(push_limits(database, settings.clusters,
                                               member_ids=[member_id])))
        database.dispose()
    console.print(f"allocation #{allocation} of {member} adjusted by {format_su(amount)}",
                  highlight=False)


@ledger_app.command()
def verify() -> None:
    """Recompute every balance from the ledger's entries; exit 1 on any difference."""
    if not MODE.local:
        with remote() as client:
            books = LedgerVerificationOut.model_validate(
                client.call("GET", f"{API}/ledger/verification"))
    else:
        _, database = _database()
        with database.session() as session:
            books = ledger.verification(session)
        database.dispose()
    if not books.drifts:
        console.print(f"the books balance: {books.entries} entries, every balance matches them")
        return
    table = Table("allocation", "member", "balance", "stored", "from", "expected", "drift")
    for d in books.drifts:
        table.add_row(str(d.allocation_id), str(d.member_id), d.column,
                      format_su(d.stored_msu), d.source, format_su(d.expected_msu),
                      format_su(d.stored_msu - d.expected_msu))
    console.print(table)
    fail(f"{len(books.drifts)} balance(s) differ from the ledger")


@quotas_app.command()
def sync(
    all_members: Annotated[bool, typer.Option(
        "--all", help="Push every member's limit, not only the changed ones.")] = False,
    margin: MarginOption = str(DEFAULT_MARGIN),
) -> None:
    """End allocation periods (settling, closing with expire entries), fire and mail alerts,
    and push pending Slurm limits. Run it periodically (e.g. every 10 minutes). On the gateway
    host only (`hpcgw admin --local quotas sync`): it is the host's periodic job, run by a
    timer with no person's login, and it waits on every cluster's Slurm and on the mail server
    for as long as they take, longer than an HTTP request should."""
    needs_local("quotas sync")
    settings, database = _database()
    with database.transaction() as session:
        moved = service.advance_periods(session, actor=local_actor())
        fired = service.refresh_alerts(session)
        summary = (f"{len(moved)} allocation(s) moved on "
                   f"({', '.join(f'#{a.id} {a.state.value}' for a in moved) or 'none'}); "
                   f"{len(fired)} alert(s) fired")
    console.print(summary, highlight=False, soft_wrap=True)
    smtp: SmtpConfig | None = settings.smtp
    if smtp is not None:
        console.print(f"{thresholds.deliver(database.transaction, smtp)} alert(s) mailed")
    results = asyncio.run(push_limits(database, settings.clusters,
                                      pending_only=not all_members, margin=_margin(margin)))
    _report_pushes(results)
    database.dispose()
    if any(r.error for r in results):
        raise typer.Exit(1)


@quotas_app.command()
def drift(margin: MarginOption = str(DEFAULT_MARGIN)) -> None:
    """Ledger against Slurm, per member account: charges against Slurm's usage, the limit the
    ledger wants against the one Slurm holds, in billing-minutes (60 x the cluster's
    slurm_billing_scale per SU). Exit 1 when a limit differs or a cluster cannot be read.
    Slurm's usage runs ahead of the ledger by what running jobs have used so far; more than
    that is work that bypassed the gateway. On the gateway host only (`hpcgw admin --local
    quotas drift`): it reads every cluster's Slurm through its admin identity, for as long as
    an unreachable cluster takes to time out, longer than an HTTP request should."""
    needs_local("quotas drift")
    settings, database = _database()
    lines = asyncio.run(_drift(database, settings, _margin(margin)))
    database.dispose()
    if not lines:
        console.print("no member account on a cluster with Slurm accounting: nothing to compare")
        return
    table = Table("member", "cluster", "account", "ledger charged", "slurm used", "usage drift",
                  "wanted limit", "slurm limit", "limit drift", "error")
    for line in lines:
        target = line.target

        def shown(value: int | None) -> str:
            return "?" if value is None else str(value)

        table.add_row(str(target.member_id), target.cluster, target.account,
                      str(line.ledger_charged_minutes), shown(line.slurm_used_minutes),
                      shown(line.usage_drift), str(line.wanted_minutes),
                      shown(line.slurm_limit_minutes), shown(line.limit_drift),
                      escape(line.error or ""))
    console.print(table)
    if any(line.error or line.limit_drift for line in lines):
        raise typer.Exit(1)


async def _drift(database: Database, settings: Settings,
                 margin: Fraction) -> list[backstop.DriftLine]:
    async with limit_sinks(settings.clusters) as sinks:
        return await backstop.drift(database.transaction, sinks, margin=margin)
