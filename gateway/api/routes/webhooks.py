"""Webhooks of a project: subscribe, list, read, delete, and the delivery log.

For the member's managers and admins (`members:manage`); another member's caller gets 404, a
member's researcher or viewer 403. The secret is in the creation's answer only.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Response

from consortium import service as consortium
from consortium.authz import Principal
from consortium.models import Project
from gateway.api.deps import (
    Caller,
    ContextDep,
    DatabaseDep,
    SessionDep,
    SettingsDep,
)
from gateway.api.errors import problems
from gateway.api.routes.audit import denials_audited
from gateway.api.routes.members import CurrentMember, RowId
from gateway.api.schemas import Page
from gateway.webhooks import service
from gateway.webhooks.models import DeliveryState
from gateway.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookCreated, WebhookOut

router = APIRouter(tags=["webhooks"])
WEBHOOKS = "/members/{member}/projects/{project}/webhooks"


def current_project(project: str, member: CurrentMember, session: SessionDep,
                    principal: Caller) -> Project:
    return consortium.get_project(session, principal, member, project)


CurrentProject = Annotated[Project, Depends(current_project)]


async def webhook_creator(member: str, project: str, principal: Caller,
                          database: DatabaseDep, context: ContextDep) -> Principal:
    """Who may subscribe here, decided before the body is read and before any DNS lookup:
    another member's caller gets 404, a member's researcher or viewer 403 (audited)."""
    def authorize() -> None:
        with database.transaction() as session:
            found = consortium.get_member(session, principal, member)
            consortium.get_project(session, principal, found, project)
            with denials_audited(session, principal, context, "webhook.create", found.id):
                service.require_manager(principal, found)

    await anyio.to_thread.run_sync(authorize)
    return principal


@router.post(WEBHOOKS, operation_id="webhooks-create", status_code=201,
             response_model=WebhookCreated,
             responses=problems(401, 403, 404, 409, 422))
async def create_webhook(*, body: WebhookCreate, member: str, project: str,
                         principal: Annotated[Principal, Depends(webhook_creator)],
                         database: DatabaseDep, settings: SettingsDep,
                         context: ContextDep) -> WebhookCreated:
    """Subscribe a URL to the project's events. The answer holds the signing secret, which is
    never shown again. A target that is not a public address is refused (422) unless the
    gateway's configuration allows it."""
    def create() -> WebhookCreated:
        with database.transaction() as session:
            found = consortium.get_member(session, principal, member)
            subscription, secret = service.create(
                session, principal, found, consortium.get_project(session, principal, found,
                                                                  project),
                data=body, settings=settings, context=context)
            return WebhookCreated(**WebhookOut.of(subscription).model_dump(), secret=secret)

    # the lookup runs outside any transaction: it can take seconds
    await service.check_target(body.url, settings.webhooks)
    return await anyio.to_thread.run_sync(create)


@router.get(WEBHOOKS, operation_id="webhooks-list", response_model=list[WebhookOut],
            responses=problems(401, 403, 404, 422))
def list_webhooks(*, member: CurrentMember, project: CurrentProject, session: SessionDep,
                  principal: Caller) -> list[WebhookOut]:
    return [WebhookOut.of(s) for s in service.list_for(session, principal, member, project)]


@router.get(WEBHOOKS + "/{webhook_id}", operation_id="webhooks-get", response_model=WebhookOut,
            responses=problems(401, 403, 404, 422))
def get_webhook(*, webhook_id: RowId, member: CurrentMember, project: CurrentProject,
                session: SessionDep, principal: Caller) -> WebhookOut:
    return WebhookOut.of(service.get(session, principal, member, project, webhook_id))


@router.delete(WEBHOOKS + "/{webhook_id}", operation_id="webhooks-delete", status_code=204,
               responses=problems(401, 403, 404, 422))
def delete_webhook(*, webhook_id: RowId, member: CurrentMember, project: CurrentProject,
                   session: SessionDep, principal: Caller,
                   context: ContextDep) -> Response:
    """Remove it and its delivery log; deliveries still due are not sent."""
    with denials_audited(session, principal, context, "webhook.delete", member.id):
        service.delete(session, principal, member, project, webhook_id, context=context)
    return Response(status_code=204)


@router.get(WEBHOOKS + "/{webhook_id}/deliveries", operation_id="webhooks-deliveries",
            response_model=Page[DeliveryOut],
            responses=problems(401, 403, 404, 422))
def list_deliveries(
    *,
    webhook_id: RowId,
    member: CurrentMember,
    project: CurrentProject,
    session: SessionDep,
    principal: Caller,
    state: DeliveryState | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$",
                                        description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[DeliveryOut]:
    """The delivery log, newest first: each event, its attempts, the last answer or error,
    the next attempt and when it was delivered."""
    found = service.deliveries(session, principal, member, project, webhook_id, state=state,
                               before_id=int(cursor) if cursor else None, limit=limit + 1)
    page = found[:limit]
    return Page[DeliveryOut](items=[DeliveryOut.of(d) for d in page],
                             next_cursor=str(page[-1].id) if len(found) > limit else None)
