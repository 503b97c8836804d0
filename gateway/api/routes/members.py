"""Members, their cluster identities, their users' roles and their projects.

Every member-scoped route loads its member through `CurrentMember`: a member the caller cannot
see answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy.orm import Session

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
from gateway.api.deps import (
    Caller,
    ContextDep,
    DatabaseDep,
    ReaderDep,
    SchedulersDep,
    SessionDep,
    SettingsDep,
)
from gateway.api.errors import problems
from gateway.api.routes.audit import denials_audited
from gateway.db import Database
from gateway.provisioning import provision_quietly
from gateway.settings import Settings
from schedulers.base import Scheduler

router = APIRouter(tags=["members"])
T = TypeVar("T")
# reads back what the change just committed (the caller was checked by the change)
SYSTEM = "system"


def current_member(member: str, session: SessionDep, principal: Caller) -> Member:
    """Load-or-404: the path's member (by slug), if the caller may see it."""
    return service.get_member(session, principal, member)


CurrentMember = Annotated[Member, Depends(current_member)]


async def visible_member(member: str, reader: ReaderDep, principal: Caller) -> str:
    """CurrentMember for the routes that talk to the clusters after their own commit (they hold
    no request session): 404 before the body is looked at, as for every member route."""
    await reader(lambda session: service.get_member(session, principal, member))
    return member


VisibleMember = Annotated[str, Depends(visible_member)]
# a row id: larger than BIGINT is a 422, not a database error
RowId = Annotated[Id, Path()]


async def _write(database: Database, change: Callable[[Session], T]) -> T:
    """A change in a transaction of its own, committed before the clusters are talked to."""
    def run() -> T:
        with database.transaction() as session:
            return change(session)
    return await anyio.to_thread.run_sync(run)


async def _provisioned(database: Database, settings: Settings,
                       schedulers: Mapping[str, Scheduler], slug: str) -> MemberOut:
    """Slurm brought to the member's committed identities and status (what fails stays
    pending for the tracker), then the member as it now stands."""
    def read(session: Session) -> MemberOut:
        return MemberOut.model_validate(service.get_member(session, SYSTEM, slug))
    member = await _write(database, read)
    await provision_quietly(database, settings, schedulers, member_ids=[member.id])
    return await _write(database, read)


@router.post("/members", operation_id="members-create", status_code=201, response_model=MemberOut,
             responses=problems(401, 403, 409, 422))
async def create_member(*, body: MemberCreate, database: DatabaseDep, principal: Caller,
                        context: ContextDep, settings: SettingsDep,
                        schedulers: SchedulersDep) -> MemberOut:
    """Onboard a member and its cluster identities in one transaction (admins); their Slurm
    accounts are then created (each identity says `provisioning`: provisioned or pending)."""
    def change(session: Session) -> None:
        with denials_audited(session, principal, context, Action.member_create):
            service.create_member(session, principal, body, settings.clusters, context=context)
    await _write(database, change)
    return await _provisioned(database, settings, schedulers, body.slug)


@router.get("/members", operation_id="members-list", response_model=list[MemberOut],
            responses=problems(401))
def list_members(*, session: SessionDep, principal: Caller) -> list[MemberOut]:
    """Every member for admins; the caller's own members otherwise."""
    return [MemberOut.model_validate(m) for m in service.list_members(session, principal)]


@router.get("/members/{member}", operation_id="members-get", response_model=MemberOut,
            responses=problems(401, 404))
def get_member(*, member: CurrentMember) -> MemberOut:
    return MemberOut.model_validate(member)


@router.patch("/members/{member}", operation_id="members-update", response_model=MemberOut,
              responses=problems(401, 403, 404, 422))
async def update_member(*, member: VisibleMember, body: MemberUpdate, database: DatabaseDep,
                        principal: Caller, context: ContextDep, settings: SettingsDep,
                        schedulers: SchedulersDep) -> MemberOut:
    """Rename, change the contact, suspend (`status: suspended`) or reactivate (admins).
    Suspending blocks the member's Slurm associations and holds (or cancels, by
    `jobs.suspended_jobs`) its queued jobs; reactivating lifts both."""
    def change(session: Session) -> None:
        found = service.get_member(session, principal, member)
        with denials_audited(session, principal, context, Action.member_update, found.id):
            service.update_member(session, principal, found, body, context=context)
    await _write(database, change)
    return await _provisioned(database, settings, schedulers, member)


def _identity_on(member: MemberOut, cluster: str) -> IdentityOut:
    return next(i for i in member.identities if i.cluster == cluster)


@router.post("/members/{member}/identities", operation_id="members-identities-add",
             status_code=201, response_model=IdentityOut,
             responses=problems(401, 403, 404, 409, 422))
async def add_identity(*, member: VisibleMember, body: IdentityIn, database: DatabaseDep,
                       principal: Caller, context: ContextDep, settings: SettingsDep,
                       schedulers: SchedulersDep) -> IdentityOut:
    """Give the member its own account on one more cluster (admins), then create its Slurm
    account and association: `provisioning` says whether that is done or still pending (the
    cluster unreachable: its tracker retries it)."""
    def change(session: Session) -> None:
        found = service.get_member(session, principal, member)
        with denials_audited(session, principal, context, Action.identity_add, found.id):
            service.add_identity(session, principal, found, body, settings.clusters,
                                 context=context)
    await _write(database, change)
    return _identity_on(await _provisioned(database, settings, schedulers, member),
                        body.cluster)


@router.delete("/members/{member}/identities/{cluster}", operation_id="members-identities-remove",
               response_model=IdentityOut, responses=problems(401, 403, 404))
async def remove_identity(*, member: VisibleMember, cluster: str, database: DatabaseDep,
                          principal: Caller, context: ContextDep, settings: SettingsDep,
                          schedulers: SchedulersDep) -> IdentityOut:
    """Take the member's account on a cluster away (admins): no new job goes there and its
    Slurm association is blocked, never deleted (Slurm keeps its accounting history)."""
    def change(session: Session) -> None:
        found = service.get_member(session, principal, member)
        with denials_audited(session, principal, context, Action.identity_remove, found.id):
            service.remove_identity(session, principal, found, cluster, context=context)
    await _write(database, change)
    return _identity_on(await _provisioned(database, settings, schedulers, member), cluster)


@router.get("/members/{member}/users", operation_id="members-users-list",
            response_model=list[MemberUserOut],
            responses=problems(401, 403, 404))
def list_member_users(*, member: CurrentMember, session: SessionDep,
                      principal: Caller) -> list[MemberUserOut]:
    """The member's users and their roles (its managers, admins)."""
    return service.list_member_users(session, principal, member)


@router.patch("/members/{member}/users/{user_id}", operation_id="members-users-change-role",
              response_model=MemberUserOut,
              responses=problems(401, 403, 404, 409, 422))
def change_role(*, user_id: RowId, body: RoleChange, member: CurrentMember, session: SessionDep,
                principal: Caller, context: ContextDep) -> MemberUserOut:
    """Change a user's role (its managers, admins). 409 would leave the member no manager."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.membership_update, member_id):
        return service.change_role(session, principal, member, user_id, body.role,
                                   context=context)


@router.delete("/members/{member}/users/{user_id}", operation_id="members-users-remove",
               status_code=204, response_class=Response,
               responses=problems(401, 403, 404, 409, 422))
def remove_membership(*, user_id: RowId, member: CurrentMember, session: SessionDep,
                      principal: Caller, context: ContextDep) -> Response:
    """Remove a user from the member (its managers, admins); the account itself stays."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.membership_remove, member_id):
        service.remove_membership(session, principal, member, user_id, context=context)
    return Response(status_code=204)


@router.post("/members/{member}/projects", operation_id="projects-create", status_code=201,
             response_model=ProjectOut,
             responses=problems(401, 403, 404, 409, 422))
def create_project(*, body: ProjectCreate, member: CurrentMember, session: SessionDep,
                   principal: Caller, context: ContextDep) -> ProjectOut:
    member_id = member.id
    with denials_audited(session, principal, context, Action.project_create, member_id):
        project = service.create_project(session, principal, member, body, context=context)
    return ProjectOut.model_validate(project)


@router.get("/members/{member}/projects", operation_id="projects-list",
            response_model=list[ProjectOut],
            responses=problems(401, 404))
def list_projects(*, member: CurrentMember, session: SessionDep,
                  principal: Caller) -> list[ProjectOut]:
    return [ProjectOut.model_validate(p)
            for p in service.list_projects(session, principal, member)]


@router.get("/members/{member}/projects/{project}", operation_id="projects-get",
            response_model=ProjectOut,
            responses=problems(401, 404))
def get_project(*, project: str, member: CurrentMember, session: SessionDep,
                principal: Caller) -> ProjectOut:
    return ProjectOut.model_validate(service.get_project(session, principal, member, project))


@router.patch("/members/{member}/projects/{project}", operation_id="projects-update",
              response_model=ProjectOut,
              responses=problems(401, 403, 404, 422))
def update_project(*, project: str, body: ProjectUpdate, member: CurrentMember,
                   session: SessionDep, principal: Caller,
                   context: ContextDep) -> ProjectOut:
    """Rename, re-describe, change the domain, archive (`status: archived`) or unarchive."""
    member_id = member.id
    with denials_audited(session, principal, context, Action.project_update, member_id):
        updated = service.update_project(session, principal, member, project, body,
                                         context=context)
    return ProjectOut.model_validate(updated)
