"""The books' verification (admins): every allocation's balance recomputed from the ledger's
entries, as `hpcgw admin ledger verify` and the admin pages show it."""

from __future__ import annotations

from fastapi import APIRouter

from consortium.authz import require_admin
from gateway.api.deps import Caller, SessionDep
from gateway.api.errors import problems
from quotas import ledger
from quotas.schemas import LedgerVerificationOut

router = APIRouter(tags=["quotas"])


@router.get("/ledger/verification", operation_id="ledger-verify",
            response_model=LedgerVerificationOut, responses=problems(401, 403))
def verify_ledger(*, session: SessionDep, principal: Caller) -> LedgerVerificationOut:
    """Every balance against the sum of its entries (and the held amount against the open
    holds); an empty `drifts` means the books balance."""
    require_admin(principal)
    return ledger.verification(session)
