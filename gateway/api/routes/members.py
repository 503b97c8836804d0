"""Members, their cluster identities, their users' roles and their projects.

Every member-scoped route loads its member through `CurrentMember`: a member the caller cannot
see answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from consortium import service
from consortium.bounds import Id
from consortium.models import Member
from consortium.schemas import (
    IdentityIn,
    IdentityOut,
    MemberCreate,
    MemberOut,
    MemberUpdate,
    MemberUserOut,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
    RoleChange,
)
from consortium.service import Action
from gateway.api.deps import ContextDep, CurrentPrincipal, SessionDep, SettingsDep
from gateway.api.errors import problems
from gateway.api.routes.audit import denials_audited

router = APIRouter(tags=["members"])


def current_member(member: str, session: SessionDep, principal: CurrentPrincipal) -> Member:
    """Load-or-404: the path's member (by slug), if the caller may see it."""
    return service.get_member(session, principal, member)


CurrentMember = Annotated[Member, Depends(current_member)]
# a row id: larger than BIGINT is a 422, not a database error
RowId = Annotated[Id, Path()]


@router.post("/members", operation_id="members-create", status_code=201, response_model=MemberOut,
             responses=problems(401, 403, 409, 422))
def create_member(*, body: MemberCreate, session: SessionDep, principal: CurrentPrincipal,
                  context: ContextDep, settings: SettingsDep) -> MemberOut:
    """Onboard a member and its cluster identities in one transaction (admins)."""
    with denials_audited(session, principal, context, Action.member_create):
        member = service.create_member(session, principal, body, settings.clusters,
                                       context=context)
    return MemberOut.model_validate(member)


@router.get("/members", operation_id="members-list", response_model=list[MemberOut],
            responses=problems(401))
def list_members(*, session: SessionDep, principal: CurrentPrincipal) -> list[MemberOut]:
    """Every member for admins; the caller's own members otherwise."""
    return [MemberOut.model_validate(m) for m in service.list_members(session, principal)]


@router.get("/members/{member}", operation_id="members-get", response_model=MemberOut,
            responses=problems(401, 404))
def get_member(*, member: CurrentMember) -> MemberOut:
    return MemberOut.model_validate(member)


@router.patch("/members/{member}", operation_id="members-update", response_model=MemberOut,
              responses=problems(401, 403, 404, 422))
def update_member(*, body: MemberUpdate, member: CurrentMember, session: SessionDep,
                  principal: CurrentPrincipal, context: ContextDep) -> MemberOut:
    """Rename, change the contact, suspend (`status: suspended`) or reactivate (admins)."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.member_update, member_id):
        service.update_member(session, principal, member, body, context=context)
    return MemberOut.model_validate(member)


@router.post("/members/{member}/identities", operation_id="members-identities-add",
             status_code=201, response_model=IdentityOut,
             responses=problems(401, 403, 404, 409, 422))
def add_identity(*, body: IdentityIn, member: CurrentMember, session: SessionDep,
                 principal: CurrentPrincipal, context: ContextDep,
                 settings: SettingsDep) -> IdentityOut:
    """Give the member its own account on one more cluster (admins)."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.identity_add, member_id):
        identity = service.add_identity(session, principal, member, body, settings.clusters,
                                        context=context)
    return IdentityOut.model_validate(identity)


@router.get("/members/{member}/users", operation_id="members-users-list",
            response_model=list[MemberUserOut],
            responses=problems(401, 403, 404))
def list_member_users(*, member: CurrentMember, session: SessionDep,
                      principal: CurrentPrincipal) -> list[MemberUserOut]:
    """The member's users and their roles (its managers, admins)."""
    return service.list_member_users(session, principal, member)


@router.patch("/members/{member}/users/{user_id}", operation_id="members-users-change-role",
              response_model=MemberUserOut,
              responses=problems(401, 403, 404, 409, 422))
def change_role(*, user_id: RowId, body: RoleChange, member: CurrentMember, session: SessionDep,
                principal: CurrentPrincipal, context: ContextDep) -> MemberUserOut:
    """Change a user's role (its managers, admins). 409 would leave the member no manager."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.membership_update, member_id):
        return service.change_role(session, principal, member, user_id, body.role,
                                   context=context)


@router.delete("/members/{member}/users/{user_id}", operation_id="members-users-remove",
               status_code=204, response_class=Response,
               responses=problems(401, 403, 404, 409, 422))
def remove_membership(*, user_id: RowId, member: CurrentMember, session: SessionDep,
                      principal: CurrentPrincipal, context: ContextDep) -> Response:
    """Remove a user from the member (its managers, admins); the account itself stays."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.membership_remove, member_id):
        service.remove_membership(session, principal, member, user_id, context=context)
    return Response(status_code=204)


@router.post("/members/{member}/projects", operation_id="projects-create", status_code=201,
             response_model=ProjectOut,
             responses=problems(401, 403, 404, 409, 422))
def create_project(*, body: ProjectCreate, member: CurrentMember, session: SessionDep,
                   principal: CurrentPrincipal, context: ContextDep) -> ProjectOut:
    member_id = member.id
    with denials_audited(session, principal, context, Action.project_create, member_id):
        project = service.create_project(session, principal, member, body, context=context)
    return ProjectOut.model_validate(project)


@router.get("/members/{member}/projects", operation_id="projects-list",
            response_model=list[ProjectOut],
            responses=problems(401, 404))
def list_projects(*, member: CurrentMember, session: SessionDep,
                  principal: CurrentPrincipal) -> list[ProjectOut]:
    return [ProjectOut.model_validate(p)
            for p in service.list_projects(session, principal, member)]


@router.get("/members/{member}/projects/{project}", operation_id="projects-get",
            response_model=ProjectOut,
            responses=problems(401, 404))
def get_project(*, project: str, member: CurrentMember, session: SessionDep,
                principal: CurrentPrincipal) -> ProjectOut:
    return ProjectOut.model_validate(service.get_project(session, principal, member, project))


@router.patch("/members/{member}/projects/{project}", operation_id="projects-update",
              response_model=ProjectOut,
              responses=problems(401, 403, 404, 422))
def update_project(*, project: str, body: ProjectUpdate, member: CurrentMember,
                   session: SessionDep, principal: CurrentPrincipal,
                   context: ContextDep) -> ProjectOut:
    """Rename, re-describe, change the domain, archive (`status: archived`) or unarchive."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.project_update, member_id):
        updated = service.update_project(session, principal, member, project, body,
                                         context=context)
    return ProjectOut.model_validate(updated)
