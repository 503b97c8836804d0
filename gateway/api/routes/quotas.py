"""Allocations, refunds, usage, the ledger, alerts and rate cards.

Reading a member's figures needs `usage:read` on it (viewers have it; another member's caller
gets 404); granting, adjusting and refunding are for consortium admins. Changes that move a
member's Slurm limit push it after the request's transaction has committed (`LimitPushes`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sqlalchemy import Select, select

from consortium.authz import Principal, Scope, require, require_admin
from consortium.base import utcnow
from consortium.bounds import Id, Instant
from consortium.errors import InvalidInput, NotFound
from consortium.models import Member, Project
from gateway.api.csv_export import CSV, csv_response
from gateway.api.deps import Caller, ContextDep, DatabaseDep, SessionDep, SettingsDep
from gateway.api.errors import problems
from gateway.api.routes.audit import denials_audited
from gateway.api.routes.members import CurrentMember
from gateway.api.schemas import Page
from gateway.backstop import limit_sinks
from gateway.db import Database
from gateway.footprint import usage as footprint
from gateway.footprint.schemas import AggregatesOut, aggregates_csv
from gateway.logging import log
from quotas import backstop, repository, service, usage
from quotas.models import Alert, AllocationState, EntryKind, LedgerEntry
from quotas.rates import rate_card, to_su
from quotas.schemas import (
    AdjustmentIn,
    AlertOut,
    AllocationIn,
    AllocationOut,
    LedgerEntryOut,
    PartitionRateOut,
    RateCardOut,
    RefundIn,
    UsageOut,
)

router = APIRouter(tags=["quotas"])

CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {CSV: {"schema": {"type": "string"}}}}}
IdempotencyKey = Annotated[str | None, Header(pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
                                              description="a retry with the same key does "
                                                          "the change once")]
Format = Annotated[Literal["json", "csv"] | None,
                   Query(description="csv, or send Accept: text/csv")]


Sinks = Mapping[str, backstop.LimitSink | None]


async def get_limit_sinks(settings: SettingsDep) -> AsyncIterator[Sinks]:
    async with limit_sinks(settings.clusters) as sinks:
        yield sinks


async def limit_pushes(
    database: DatabaseDep,
    sinks: Annotated[Sinks, Depends(get_limit_sinks)],
) -> AsyncIterator[set[int]]:
    """Members whose Slurm limit the route changed, pushed when the request is over.

    Declared before any session-using parameter, this dependency is entered before the
    request's session and so left after it: the push runs once the changes have committed,
    never inside the transaction, and not at all if the request failed. A push that fails
    stays in the outbox for `hpcgw admin quotas sync`.
    """
    changed: set[int] = set()
    yield changed
    if changed:
        try:
            for result in await backstop.push(database.transaction, sinks, member_ids=changed):
                if result.error:
                    log.warning("slurm limit not pushed", member_id=result.target.member_id,
                                cluster=result.target.cluster, error=result.error)
        except Exception as exc:  # noqa: BLE001 - the response is gone; the outbox keeps it
            log.error("slurm limit push failed", exc_info=exc)


LimitPushes = Annotated[set[int], Depends(limit_pushes)]


def _reader(principal: Principal, member: Member) -> None:
    require(principal, Scope.usage_read, member.id)


def _wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    return CSV in request.headers.get("accept", "")


# --- allocations ---------------------------------------------------------------------------


@router.post("/members/{member}/allocations", operation_id="allocations-grant", status_code=201,
             response_model=AllocationOut,
             responses=problems(401, 403, 404, 409, 422))
def grant_allocation(*, pushes: LimitPushes, body: AllocationIn, member: CurrentMember,
                     session: SessionDep, principal: Caller, context: ContextDep,
                     idempotency_key: IdempotencyKey = None) -> AllocationOut:
    """Grant hours to a member, optionally earmarked to one of its projects (admins)."""
    member_id = member.id
    with denials_audited(session, principal, context, "allocation.grant", member_id):
        require_admin(principal)
    project_id = None
    if body.project is not None:
        project_id = session.scalar(select(Project.id).where(Project.member_id == member_id,
                                                             Project.slug == body.project))
        if project_id is None:
            raise InvalidInput(f"the member has no project '{body.project}'")
    allocation = service.grant(
        session, member_id=member_id, amount_msu=body.msu, kind=body.kind,
        starts_at=body.starts_at or utcnow(), ends_at=body.ends_at, project_id=project_id,
        overdraft_msu=body.overdraft, note=body.note, actor=principal, context=context,
        idempotency_key=idempotency_key)
    pushes.add(member_id)
    return AllocationOut.of(allocation)


@router.get("/members/{member}/allocations", operation_id="allocations-list",
            response_model=list[AllocationOut],
            responses=problems(401, 403, 404, 422))
def list_allocations(*, member: CurrentMember, session: SessionDep,
                     principal: Caller,
                     state: AllocationState | None = None) -> list[AllocationOut]:
    """The member's allocations with their balances, oldest period first."""
    _reader(principal, member)
    states = None if state is None else [state]
    return [AllocationOut.of(a) for a in repository.allocations_of(session, member.id,
                                                                    states=states)]


@router.post("/members/{member}/allocations/{allocation_id}/adjustments",
             operation_id="allocations-adjust", status_code=201,
             response_model=LedgerEntryOut, responses=problems(401, 403, 404, 409, 422))
def adjust_allocation(*, pushes: LimitPushes, allocation_id: Id, body: AdjustmentIn,
                      member: CurrentMember, session: SessionDep, principal: Caller,
                      context: ContextDep,
                      idempotency_key: IdempotencyKey = None) -> LedgerEntryOut:
    """Add hours to an allocation or take some back, with a reason (admins)."""
    member_id = member.id
    with denials_audited(session, principal, context, "allocation.adjust", member_id):
        require_admin(principal)
    entry = service.adjust(session, member_id=member_id, allocation_id=allocation_id,
                           amount_msu=body.msu, reason=body.reason, actor=principal,
                           context=context, idempotency_key=idempotency_key)
    pushes.add(member_id)
    return LedgerEntryOut.of(entry)


@router.post("/members/{member}/refunds", operation_id="members-refund", status_code=201,
             response_model=LedgerEntryOut,
             responses=problems(401, 403, 404, 409, 422))
def refund_job(*, pushes: LimitPushes, body: RefundIn, member: CurrentMember,
               session: SessionDep, principal: Caller, context: ContextDep,
               idempotency_key: IdempotencyKey = None) -> LedgerEntryOut:
    """Give back part or all of a job's charge, with a reason (admins)."""
    member_id = member.id
    with denials_audited(session, principal, context, "quota.refund", member_id):
        require_admin(principal)
    entry = service.refund(session, member_id=member_id, job_id=body.job_id,
                           amount_msu=body.msu, reason=body.reason, actor=principal,
                           context=context, idempotency_key=idempotency_key)
    pushes.add(member_id)
    return LedgerEntryOut.of(entry)


# --- usage, ledger, alerts ----------------------------------------------------------------


def _usage_rows(report: usage.UsageReport) -> Iterator[Sequence[object]]:
    yield ["section", "key", "label", "metric", "msu", "su"]
    for key, msu in (("allocated", report.granted_msu), ("overdraft", report.overdraft_msu),
                     ("used", report.used_msu), ("held", report.held_msu),
                     ("available", report.available_msu)):
        yield ["summary", key, "", "amount", msu, to_su(msu)]
    for pace in report.pace:
        section = f"pace_{pace.window_days}d"
        yield [section, "used", "", "amount", pace.used_msu, to_su(pace.used_msu)]
        yield [section, "per_day", "", "amount", pace.msu_per_day, to_su(pace.msu_per_day)]
    for section, lines in (("project", report.by_project), ("user", report.by_user),
                           ("partition", report.by_partition), ("month", report.by_month)):
        for line in lines:
            yield [section, line.key, line.label, "used", line.used_msu, to_su(line.used_msu)]
            if section != "month":
                yield [section, line.key, line.label, "held", line.held_msu,
                       to_su(line.held_msu)]


@router.get("/members/{member}/usage", operation_id="members-usage", response_model=UsageOut,
            responses={**CSV_RESPONSE, **problems(401, 403, 404, 422)})
def member_usage(*, request: Request, member: CurrentMember, session: SessionDep,
                 principal: Caller, format: Format = None) -> UsageOut | Response:
    """Allocated, used, held, available, burn rate, projected exhaustion, and who spent what,
    over the member's current (not closed) allocations. Every figure is a sum of ledger
    entries. JSON, or CSV (one figure a row)."""
    _reader(principal, member)
    report = usage.report(session, member.id)
    if _wants_csv(request, format):
        return csv_response(_usage_rows(report), f"{member.slug}-usage.csv")
    return UsageOut.of(report)


@router.get("/members/{member}/footprint", operation_id="members-footprint",
            response_model=AggregatesOut,
            responses={**CSV_RESPONSE, **problems(401, 403, 404, 422)})
def member_footprint(
    *, request: Request, member: CurrentMember, session: SessionDep, principal: Caller,
    since: Annotated[Instant | None, Query(description="jobs ended at or after")] = None,
    until: Annotated[Instant | None, Query(description="jobs ended before")] = None,
    format: Format = None,
) -> AggregatesOut | Response:
    """Energy (kWh) and carbon (gCO2e) of the member's settled jobs, by project, user, domain
    and month, each split into measured and estimated, with everyday equivalents. JSON, or CSV
    (one line a group; the `figures` column says measured or estimated)."""
    _reader(principal, member)
    out = AggregatesOut.of(footprint.of_member(session, member.id, since=since, until=until))
    if _wants_csv(request, format):
        return csv_response(aggregates_csv(out), f"{member.slug}-footprint.csv")
    return out


LEDGER_COLUMNS = ["id", "at", "allocation_id", "kind", "amount_msu", "amount_su", "project_id",
                  "user_id", "cluster", "partition", "job_id", "actor", "reason"]


def _ledger_rows(database: Database, query: Select[LedgerEntry]) -> Iterator[Sequence[object]]:
    yield LEDGER_COLUMNS
    after = 0
    while True:
        # a short session per batch (the response outlives the request's): no connection is
        # held while a slow client reads; the id order makes the batches consistent
        with database.session() as session:
            batch = session.scalars(query.where(LedgerEntry.id > after)
                                    .order_by(LedgerEntry.id).limit(1000)).all()
        for e in batch:
            yield [e.id, e.at.isoformat(), e.allocation_id, e.kind.value, e.amount_msu,
                   to_su(e.amount_msu), e.project_id, e.user_id, e.cluster, e.partition,
                   e.job_id, e.actor, e.reason]
        if len(batch) < 1000:
            return
        after = batch[-1].id


@router.get("/members/{member}/ledger", operation_id="members-ledger",
            response_model=Page[LedgerEntryOut],
            responses={**CSV_RESPONSE, **problems(401, 403, 404, 422)})
def member_ledger(
    *,
    request: Request,
    member: CurrentMember,
    session: SessionDep,
    database: DatabaseDep,
    principal: Caller,
    kind: Annotated[list[EntryKind] | None, Query()] = None,
    allocation: Id | None = None,
    job: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[Instant | None, Query(description="at or after")] = None,
    until: Annotated[Instant | None, Query(description="before")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$",
                                        description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Format = None,
) -> Page[LedgerEntryOut] | Response:
    """The member's ledger entries, newest first, a page at a time; as CSV every matching
    entry, oldest first."""
    _reader(principal, member)
    query = repository.ledger_query(member.id, kinds=kind or (), allocation_id=allocation,
                                    job_id=job, since=since, until=until)
    if _wants_csv(request, format):
        return csv_response(_ledger_rows(database, query), f"{member.slug}-ledger.csv")
    if cursor is not None:
        query = query.where(LedgerEntry.id < int(cursor))
    entries = session.scalars(query.order_by(LedgerEntry.id.desc()).limit(limit + 1)).all()
    more = len(entries) > limit
    page = entries[:limit]
    return Page(items=[LedgerEntryOut.of(e) for e in page],
                next_cursor=str(page[-1].id) if more else None)


@router.get("/members/{member}/alerts", operation_id="members-alerts",
            response_model=list[AlertOut],
            responses=problems(401, 403, 404))
def member_alerts(*, member: CurrentMember, session: SessionDep,
                  principal: Caller) -> list[AlertOut]:
    """Thresholds the member's allocations have crossed (50/80/90/100 % used, exhaustion
    projected before the period ends), newest first."""
    _reader(principal, member)
    alerts = session.scalars(select(Alert).where(Alert.member_id == member.id)
                             .order_by(Alert.id.desc()))
    return [AlertOut.of(a) for a in alerts]


# --- rates ----------------------------------------------------------------------------------


@router.get("/clusters/{cluster}/rates", operation_id="clusters-rates", response_model=RateCardOut,
            responses=problems(401, 404))
def cluster_rates(*, cluster: str, settings: SettingsDep,
                  principal: Caller) -> RateCardOut:
    """The rate card: SU per hour of each partition, from the configuration quotes use."""
    config = settings.cluster(cluster)
    if config is None:
        raise NotFound(f"no cluster '{cluster}'")
    return RateCardOut(cluster=cluster, partitions=[
        PartitionRateOut.of(rate) for rate in rate_card(cluster, config.partitions)])

