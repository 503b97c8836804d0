"""Invitations: a member's managers (and admins) invite people by email; the invitee accepts
with the single-use token of the link (the one public route here: a new account needs no other
credential, an existing one signs in; see docs/invitations.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from consortium import service
from consortium.base import utcnow
from consortium.schemas import (
    InvitationAccept,
    InvitationAccepted,
    InvitationCreate,
    InvitationCreated,
    InvitationOut,
    MembershipOut,
)
from consortium.service import Action
from gateway.api.deps import (
    Caller,
    ContextDep,
    OptionalCaller,
    SessionDep,
    SettingsDep,
)
from gateway.api.errors import problems
from gateway.api.routes.audit import denials_audited
from gateway.api.routes.members import CurrentMember, RowId
from gateway.logging import log

router = APIRouter(tags=["invitations"])


@router.post("/members/{member}/invitations", operation_id="invitations-create", status_code=201,
             response_model=InvitationCreated, responses=problems(401, 403, 404, 409, 422))
def create_invitation(*, body: InvitationCreate, member: CurrentMember, session: SessionDep,
                      principal: Caller, context: ContextDep,
                      settings: SettingsDep) -> InvitationCreated:
    """Invite someone to the member with a role (its managers, admins).

    With SMTP configured the link goes to the invitee by mail and `link` is null; without it,
    or when sending failed (`mail: failed`, `mail_error`), the link is returned here for the
    inviter to pass on. It works once, until `expires_at`.
    """
    member_id, member_name = member.id, member.name
    with denials_audited(session, principal, context, Action.invitation_create, member_id):
        invitation, token = service.create_invitation(
            session, principal, member, body, ttl=settings.invitation_ttl, context=context)
    session.commit()  # the invitation exists before a mail announces it
    link = service.invitation_link(settings.base_url, token)
    delivery = service.deliver_invitation(settings.smtp, invitation, member_name, link)
    if delivery.error:
        log.warning("invitation mail not sent", invitation_id=invitation.id,
                    error=delivery.error)
    return InvitationCreated.of(invitation, utcnow(), mail=delivery.mail,
                                mail_error=delivery.error,
                                link=None if delivery.mail == "sent" else link)


@router.get("/members/{member}/invitations", operation_id="invitations-list",
            response_model=list[InvitationOut],
            responses=problems(401, 403, 404))
def list_invitations(*, member: CurrentMember, session: SessionDep,
                     principal: Caller) -> list[InvitationOut]:
    """The member's invitations, newest first, with their status (never their token)."""
    now = utcnow()
    return [InvitationOut.of(i, now)
            for i in service.list_invitations(session, principal, member)]


@router.delete("/members/{member}/invitations/{invitation_id}", operation_id="invitations-revoke",
               status_code=204,
               response_class=Response, responses=problems(401, 403, 404, 409, 422))
def revoke_invitation(*, invitation_id: RowId, member: CurrentMember, session: SessionDep,
                      principal: Caller, context: ContextDep) -> Response:
    """Revoke a pending invitation (409 if it was already accepted)."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.invitation_revoke, member_id):
        service.revoke_invitation(session, principal, member, invitation_id, context=context)
    return Response(status_code=204)


# `{}` in its security: signing in is optional (OpenAPI's anonymous alternative)
@router.post("/invitations/{token}/accept", operation_id="invitations-accept",
             response_model=InvitationAccepted,
             responses=problems(401, 403, 404, 409, 410, 422), openapi_extra={"security": [{}]})
def accept_invitation(*, token: Annotated[str, Path(max_length=128)], body: InvitationAccept,
                      session: SessionDep, context: ContextDep,
                      signed_in: OptionalCaller) -> InvitationAccepted:
    """Accept an invitation (the token in the path is the invitation's credential).

    An account that exists joins only when signed in as it (a login, not a personal access
    token) with an empty body. Otherwise `name` and `password` create the account, and only if
    the email has none; every other case is one 401 that does not tell whether the email has an
    account. The answer holds the one membership made. 410 once used, revoked or expired."""
    user, membership = service.accept_invitation(session, token, body, signed_in=signed_in,
                                                 context=context)
    return InvitationAccepted(email=user.email, name=user.name,
                              membership=MembershipOut.model_validate(membership))
