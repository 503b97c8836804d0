"""User accounts, consortium-wide (admins): list, create, make or unmake an administrator,
deactivate. A member's people come through invitations; the very first administrator is
created on the gateway host (`hpcgw admin --local user create --admin`), since only an
administrator may call these."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from consortium import service
from consortium.schemas import UserCreate, UserOut, UserUpdate
from consortium.service import Action
from gateway.api.deps import Caller, ContextDep, SessionDep
from gateway.api.errors import problems
from gateway.api.routes.audit import denials_audited

router = APIRouter(tags=["users"])
UserEmail = Annotated[str, Path(min_length=3, max_length=320, description="the account's email")]


@router.get("/users", operation_id="users-list", response_model=list[UserOut],
            responses=problems(401, 403))
def list_users(*, session: SessionDep, principal: Caller) -> list[UserOut]:
    """Every account, its flags and its memberships, by email."""
    return service.list_users(session, principal)


@router.post("/users", operation_id="users-create", status_code=201, response_model=UserOut,
             responses=problems(401, 403, 409, 422))
def create_user(*, body: UserCreate, session: SessionDep, principal: Caller,
                context: ContextDep) -> UserOut:
    """An account with no membership (`is_admin`: a consortium administrator). 409 if the email
    has one already; 422 for a weak password."""
    with denials_audited(session, principal, context, Action.user_create):
        user = service.create_user(session, principal, body, context=context)
    return service.user_view(session, user)


@router.patch("/users/{email}", operation_id="users-update", response_model=UserOut,
              responses=problems(401, 403, 404, 422))
def update_user(*, email: UserEmail, body: UserUpdate, session: SessionDep, principal: Caller,
                context: ContextDep) -> UserOut:
    """Set or take away the admin flag (`is_admin`), or deactivate (`is_active: false`, for
    good: every credential of the account stops working at once)."""
    if body.is_admin is not None:
        with denials_audited(session, principal, context, Action.user_set_admin):
            service.set_admin(session, principal, email, body.is_admin, context=context)
    if body.is_active is False:
        with denials_audited(session, principal, context, Action.user_deactivate):
            service.deactivate_user(session, principal, email, context=context)
    return service.user_view(session, service.get_user(session, principal, email))
