"""`hpcgw admin ledger verify`: every balance recomputed from the entries, and compared."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from quotas.models import Allocation, EntryKind, Hold, HoldState, LedgerEntry
from quotas.schemas import BalanceDriftOut, LedgerVerificationOut

# balance column -> the entry kinds it sums, with the sign that turns the sum into the column
COLUMNS: dict[str, tuple[int, tuple[EntryKind, ...]]] = {
    "granted_msu": (1, (EntryKind.grant, EntryKind.adjust)),
    "charged_msu": (-1, (EntryKind.charge,)),
    "refunded_msu": (1, (EntryKind.refund,)),
    "held_msu": (-1, (EntryKind.hold, EntryKind.release)),
    "expired_msu": (-1, (EntryKind.expire,)),
}


@dataclass(frozen=True)
class Drift:
    allocation_id: int
    member_id: int
    column: str
    stored_msu: int
    expected_msu: int
    source: str  # "entries", or "open holds" for the cross-check of held_msu


def _books() -> Select[Any]:
    """Every allocation with its entries' sums, one per balance column, its number of entries
    and the amount its open holds keep, in one statement: on PostgreSQL each statement of a
    READ COMMITTED transaction sees its own snapshot, and a settlement committed between two
    statements (the tracker works while an admin verifies) would read as a drift."""
    sums = select(LedgerEntry.allocation_id, func.count().label("entries"), *(
        func.sum(case((LedgerEntry.kind.in_(kinds), LedgerEntry.amount_msu), else_=0))
        .label(column) for column, (_, kinds) in COLUMNS.items()
    )).group_by(LedgerEntry.allocation_id).subquery()
    held = select(Hold.allocation_id, func.sum(Hold.amount_msu).label("open_msu")).where(
        Hold.state == HoldState.open).group_by(Hold.allocation_id).subquery()
    return (select(Allocation, sums.c.entries, *(sums.c[column] for column in COLUMNS),
                   held.c.open_msu)
            .outerjoin(sums, sums.c.allocation_id == Allocation.id)
            .outerjoin(held, held.c.allocation_id == Allocation.id)
            .order_by(Allocation.id).execution_options(populate_existing=True))


def _verified(session: Session) -> tuple[int, list[Drift]]:
    """(number of entries, drifts), read in one snapshot."""
    entries, drifts = 0, []
    for row in session.execute(_books()):
        allocation = row.Allocation
        entries += row.entries or 0
        for column, (sign, _) in COLUMNS.items():
            expected = sign * int(getattr(row, column) or 0)
            stored = getattr(allocation, column)
            if stored != expected:
                drifts.append(Drift(allocation.id, allocation.member_id, column, stored,
                                    expected, "entries"))
        held = int(row.open_msu or 0)
        if allocation.held_msu != held:
            drifts.append(Drift(allocation.id, allocation.member_id, "held_msu",
                                allocation.held_msu, held, "open holds"))
    return entries, drifts


def verify(session: Session) -> list[Drift]:
    """Every allocation's balance against the sum of its entries (and its held amount against
    its open holds). An empty list means the books balance."""
    return _verified(session)[1]


def verification(session: Session) -> LedgerVerificationOut:
    """The books' check as the API and `hpcgw admin ledger verify` report it."""
    entries, drifts = _verified(session)
    return LedgerVerificationOut(
        entries=entries, drifts=[BalanceDriftOut.model_validate(d) for d in drifts])
