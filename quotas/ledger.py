"""`hpcgw admin ledger verify`: every balance recomputed from the entries, and compared."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
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


def verify(session: Session) -> list[Drift]:
    """Every allocation's balance against the sum of its entries (and its held amount against
    its open holds). An empty list means the books balance."""
    sums: dict[int, dict[EntryKind, int]] = defaultdict(dict)
    for allocation_id, kind, total in session.execute(
        select(LedgerEntry.allocation_id, LedgerEntry.kind, func.sum(LedgerEntry.amount_msu))
        .group_by(LedgerEntry.allocation_id, LedgerEntry.kind)
    ):
        sums[allocation_id][kind] = int(total)
    open_holds = dict(session.execute(
        select(Hold.allocation_id, func.sum(Hold.amount_msu))
        .where(Hold.state == HoldState.open).group_by(Hold.allocation_id)
    ).all())
    drifts = []
    allocations = select(Allocation).order_by(Allocation.id).execution_options(
        populate_existing=True)
    for allocation in session.scalars(allocations):
        entries = sums.get(allocation.id, {})
        for column, (sign, kinds) in COLUMNS.items():
            expected = sign * sum(entries.get(kind, 0) for kind in kinds)
            stored = getattr(allocation, column)
            if stored != expected:
                drifts.append(Drift(allocation.id, allocation.member_id, column, stored,
                                    expected, "entries"))
        held = int(open_holds.get(allocation.id, 0))
        if allocation.held_msu != held:
            drifts.append(Drift(allocation.id, allocation.member_id, "held_msu",
                                allocation.held_msu, held, "open holds"))
    return drifts


def verification(session: Session) -> LedgerVerificationOut:
    """The books' check as the API and `hpcgw admin ledger verify` report it."""
    return LedgerVerificationOut(
        entries=session.scalar(select(func.count()).select_from(LedgerEntry)) or 0,
        drifts=[BalanceDriftOut.model_validate(d) for d in verify(session)])
