"""The audit trail: reading it (admins), and recording the refusals of state-changing routes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from consortium import audit, service
from consortium.audit import RequestContext
from consortium.authz import Principal
from consortium.bounds import Instant
from consortium.errors import PermissionDenied
from consortium.models import Outcome
from consortium.schemas import AuditEventOut, AuditFilter
from gateway.api.deps import Caller, SessionDep
from gateway.api.errors import problems
from gateway.api.schemas import Page

router = APIRouter(tags=["audit"])
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


@contextmanager
def denials_audited(session: Session, principal: Principal, context: RequestContext,
                    action: str, member_id: int | None = None) -> Iterator[None]:
    """Record a refused attempt (403) as an `outcome=denied` event, then let the refusal go on.

    The request's transaction is rolled back first (the refusal keeps nothing of it) and the
    event committed on the same session: a second session would wait on SQLite's write lock,
    which the request's own transaction holds.
    """
    try:
        yield
    except PermissionDenied as exc:
        session.rollback()
        audit.record(session, actor=principal, action=action,
                     target_type=action.partition(".")[0], member_id=member_id,
                     outcome=Outcome.denied, context=context, details={"reason": exc.detail})
        session.commit()
        raise


@router.get("/audit", operation_id="audit-list", response_model=Page[AuditEventOut],
            responses=problems(401, 403, 404, 422))
def list_audit(
    *,
    session: SessionDep,
    principal: Caller,
    member: Annotated[str | None, Query(description="member slug")] = None,
    actor: Annotated[str | None, Query(max_length=320, pattern=_PRINTABLE,
                                       description="email, or cli / system")] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=_PRINTABLE,
                                        description="e.g. member.create")] = None,
    outcome: Outcome | None = None,
    since: Annotated[Instant | None, Query(description="at or after (inclusive)")] = None,
    until: Annotated[Instant | None, Query(description="before (exclusive)")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$",
                                        description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[AuditEventOut]:
    """The audit trail, newest first (admins). Unknown member slug: 404."""
    filters = AuditFilter(member=member, actor=actor, action=action, outcome=outcome,
                          since=since, until=until)
    events, next_id = service.list_audit(session, principal, filters,
                                         before_id=int(cursor) if cursor else None, limit=limit)
    return Page[AuditEventOut](
        items=[AuditEventOut.model_validate(e) for e in events],
        next_cursor=None if next_id is None else str(next_id),
    )
