"""The audit trail: every state-changing action, who did it, for whom, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from consortium.authz import Principal
from consortium.models import AuditEvent, Outcome


@dataclass(frozen=True)
class RequestContext:
    """Where an action came from; the CLI and the tracker pass their own."""

    request_id: str | None = None
    client_addr: str | None = None


CLI_CONTEXT = RequestContext(request_id=None, client_addr="cli")


def record(
    session: Session,
    *,
    actor: Principal | str,
    action: str,
    target_type: str,
    target_id: object = None,
    member_id: int | None = None,
    outcome: Outcome = Outcome.success,
    context: RequestContext = CLI_CONTEXT,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to the session's transaction (it lands or not with the action)."""
    event = AuditEvent(
        actor_user_id=actor.user_id if isinstance(actor, Principal) else None,
        actor=actor.email if isinstance(actor, Principal) else actor,
        member_id=member_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        outcome=outcome,
        client_addr=context.client_addr,
        request_id=context.request_id,
        details=details or {},
    )
    session.add(event)
    return event
