"""`hpcgw admin`: the consortium's administration.

Over the API by default, as the person logged in (gateway.cli.admin_mode); with `--local`, on
the gateway host: the command opens the configured database and calls the same service
functions as the API, as the operating-system user ("os:root"), whoever holds the database's
credentials already. Either way the change is audited, and Slurm follows it after the commit
(gateway.provisioning).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from consortium import service
from consortium.audit import CLI_CONTEXT
from consortium.base import utcnow
from consortium.errors import DomainError
from consortium.models import Domain, MemberKind, MemberStatus, Outcome, Role
from consortium.schemas import (
    AuditEventOut,
    AuditFilter,
    IdentityIn,
    InvitationCreate,
    InvitationCreated,
    MemberCreate,
    MemberOut,
    MemberUpdate,
    MemberUserOut,
    ProjectCreate,
    ProjectOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from gateway.cli.admin_mode import MODE, local_actor, remote
from gateway.cli.client import API
from gateway.cli.clusters import provision_here
from gateway.cli.output import ProfileOption
from gateway.cli.runtime import console, fail, load_settings
from gateway.db import Database
from gateway.settings import Settings

ACTOR = local_actor()
M = TypeVar("M", bound=BaseModel)

admin_app = typer.Typer(help="Consortium administration: members, users, invitations, audit.",
                        no_args_is_help=True)
member_app = typer.Typer(help="Members (organisations) and their cluster identities.",
                         no_args_is_help=True)
user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
identity_app = typer.Typer(help="A member's own accounts on the clusters.",
                            no_args_is_help=True)
project_app = typer.Typer(help="Members' projects.", no_args_is_help=True)
admin_app.add_typer(member_app, name="member")
member_app.add_typer(identity_app, name="identity")
admin_app.add_typer(project_app, name="project")
admin_app.add_typer(user_app, name="user")


@admin_app.callback()
def admin_options(
    local: Annotated[bool, typer.Option(
        "--local", help="Use the database of this host (the gateway's), audited as the "
                        "operating-system user: for the first administrator and emergencies."
    )] = False,
    profile: ProfileOption = None,
) -> None:
    """Consortium administration, over the API as the person logged in (`hpcgw login`)."""
    MODE.local, MODE.profile = local, profile


def _print_identities(member: dict[str, Any]) -> None:
    for i in member["identities"]:
        error = f" ({escape(i['slurm_error'])})" if i["slurm_error"] else ""
        console.print(f"{i['cluster']}: account {i['slurm_account']} {i['provisioning']}"
                      f"{error}", highlight=False)


@contextmanager
def _session(*, write: bool) -> Iterator[tuple[Session, Settings]]:
    """A transaction on the configured database, committed if the command succeeds; a refusal
    of the domain or of the input is one line on stderr and exit status 1."""
    settings = load_settings()
    database = Database(settings.effective_database_url)
    try:
        with database.transaction(write=write) as session:
            yield session, settings
    except DomainError as exc:
        fail(exc.detail)
    finally:
        database.dispose()


def _parse(model: type[M], **data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                       for e in exc.errors()))


def _identity(spec: str) -> dict[str, str]:
    parts = spec.split(":", 3)
    if len(parts) != 4:
        fail(f"--identity {spec!r}: expected CLUSTER:UNIX_USER:SLURM_ACCOUNT:KEY_REF")
    return dict(zip(("cluster", "unix_user", "slurm_account", "ssh_key_ref"), parts,
                    strict=True))


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: expected an ISO 8601 date or time (UTC if no offset)")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- members -------------------------------------------------------------------------------


@member_app.command("create")
def member_create(
    slug: Annotated[str, typer.Argument(help="Lowercase letters, digits and hyphens.")],
    *,
    name: Annotated[str, typer.Option(help="The organisation's name.")],
    kind: Annotated[MemberKind, typer.Option(help="What kind of member it is.")],
    contact_name: Annotated[str | None, typer.Option(help="Who to contact.")] = None,
    contact_email: Annotated[str | None, typer.Option(help="Their email.")] = None,
    identity: Annotated[list[str] | None, typer.Option(
        help="CLUSTER:UNIX_USER:SLURM_ACCOUNT:KEY_REF, KEY_REF naming one of the cluster's "
             "configured identities (repeat for several clusters).")] = None,
) -> None:
    """Onboard a member with its own account on each cluster."""
    data = _parse(MemberCreate, slug=slug, name=name, kind=kind, contact_name=contact_name,
                  contact_email=contact_email, identities=[_identity(i) for i in identity or []])
    if not MODE.local:
        with remote() as client:
            created = client.call("POST", f"{API}/members", json=data.model_dump(mode="json"))
        clusters = ", ".join(i["cluster"] for i in created["identities"]) or "no cluster yet"
        console.print(f"member {slug} created ({clusters})", highlight=False)
        _print_identities(created)
        return
    with _session(write=True) as (session, settings):
        member = service.create_member(session, ACTOR, data, settings.clusters,
                                       context=CLI_CONTEXT)
        clusters = ", ".join(i.cluster for i in member.identities) or "no cluster yet"
        member_id = member.id
    console.print(f"member {slug} created ({clusters})", highlight=False)
    if data.identities:
        provision_here(settings, member_ids=[member_id])


@member_app.command("list")
def member_list() -> None:
    """Every member, its status and its clusters."""
    table = Table("slug", "name", "kind", "status", "clusters")
    if not MODE.local:
        with remote() as client:
            members = [MemberOut.model_validate(m) for m in client.call("GET", f"{API}/members")]
    else:
        with _session(write=False) as (session, _):
            members = [MemberOut.model_validate(m) for m in service.list_members(session, ACTOR)]
    for member in members:
        table.add_row(member.slug, escape(member.name), member.kind.value,
                      _status(member.status),
                      ", ".join(f"{i.cluster} ({i.unix_user}, {i.provisioning})"
                                for i in member.identities))
    console.print(table)


def _status(status: MemberStatus) -> str:
    return "active" if status == MemberStatus.active else f"[bold red]{status.value}[/bold red]"


@member_app.command("show")
def member_show(slug: Annotated[str, typer.Argument(help="The member's slug.")]) -> None:
    """A member: contact, cluster identities, users and projects."""
    if not MODE.local:
        with remote() as client:
            member = MemberOut.model_validate(client.call("GET", f"{API}/members/{slug}"))
            users = [MemberUserOut.model_validate(u)
                     for u in client.call("GET", f"{API}/members/{slug}/users")]
            projects = [ProjectOut.model_validate(p)
                        for p in client.call("GET", f"{API}/members/{slug}/projects")]
    else:
        with _session(write=False) as (session, _):
            found = service.get_member(session, ACTOR, slug)
            member = MemberOut.model_validate(found)
            users = service.list_member_users(session, ACTOR, found)
            projects = [ProjectOut.model_validate(p)
                        for p in service.list_projects(session, ACTOR, found)]
    console.print(f"[bold]{escape(member.name)}[/bold] ({member.slug}, {member.kind.value}, "
                  f"{_status(member.status)})")
    console.print(f"contact: {escape(member.contact_name or '-')} "
                  f"<{escape(member.contact_email or '-')}>", highlight=False)
    identities = Table("cluster", "unix user", "slurm account", "key ref", "provisioning",
                       title="identities")
    for i in member.identities:
        identities.add_row(i.cluster, i.unix_user, i.slurm_account, escape(i.ssh_key_ref),
                           i.provisioning)
    people = Table("id", "email", "name", "role", "active", title="users")
    for u in users:
        people.add_row(str(u.user_id), escape(u.email), escape(u.name), u.role.value,
                       "yes" if u.is_active else "no")
    work = Table("slug", "name", "domain", "status", title="projects")
    for p in projects:
        work.add_row(p.slug, escape(p.name), p.domain.value, p.status.value)
    console.print(identities, people, work)


def _set_status(slug: str, status: MemberStatus) -> None:
    if not MODE.local:
        with remote() as client:
            member = client.call("PATCH", f"{API}/members/{slug}",
                                 json={"status": status.value})
        console.print(f"member {slug} is {status.value}", highlight=False)
        _print_identities(member)
        return
    with _session(write=True) as (session, settings):
        member = service.get_member(session, ACTOR, slug)
        service.update_member(session, ACTOR, member, MemberUpdate(status=status),
                              context=CLI_CONTEXT)
        member_id = member.id
    console.print(f"member {slug} is {status.value}", highlight=False)
    provision_here(settings, member_ids=[member_id])


@member_app.command("suspend")
def member_suspend(slug: Annotated[str, typer.Argument(help="The member's slug.")]) -> None:
    """Suspend a member: its people lose every right at once (their next request), its Slurm
    associations take no new job, its queued jobs are held (or cancelled: jobs.suspended_jobs)."""
    _set_status(slug, MemberStatus.suspended)


@member_app.command("reactivate")
def member_reactivate(slug: Annotated[str, typer.Argument(help="The member's slug.")]) -> None:
    """Give a suspended member its rights back; its associations and held jobs are released."""
    _set_status(slug, MemberStatus.active)


@identity_app.command("add")
def identity_add(
    member: Annotated[str, typer.Argument(help="The member's slug.")],
    spec: Annotated[str, typer.Argument(help="CLUSTER:UNIX_USER:SLURM_ACCOUNT:KEY_REF")],
    partition: Annotated[list[str] | None, typer.Option(
        help="A partition it may use (repeat; default: all).")] = None,
) -> None:
    """Give the member its own account on a cluster, and create it in Slurm (its account, the
    association of its Unix user, the ledger's limit)."""
    data = _parse(IdentityIn, **_identity(spec), allowed_partitions=partition)
    if not MODE.local:
        with remote() as client:
            made = client.call("POST", f"{API}/members/{member}/identities",
                               json=data.model_dump(mode="json"))
        _print_identities({"identities": [made]})
        return
    with _session(write=True) as (session, settings):
        found = service.get_member(session, ACTOR, member)
        service.add_identity(session, ACTOR, found, data, settings.clusters,
                             context=CLI_CONTEXT)
        member_id = found.id
    provision_here(settings, member_ids=[member_id])


@identity_app.command("remove")
def identity_remove(
    member: Annotated[str, typer.Argument(help="The member's slug.")],
    cluster: Annotated[str, typer.Argument(help="The cluster's name.")],
) -> None:
    """Take the member's account on a cluster away: blocked in Slurm, never deleted (its
    accounting history stays)."""
    if not MODE.local:
        with remote() as client:
            gone = client.call("DELETE", f"{API}/members/{member}/identities/{cluster}")
        _print_identities({"identities": [gone]})
        return
    with _session(write=True) as (session, settings):
        found = service.get_member(session, ACTOR, member)
        service.remove_identity(session, ACTOR, found, cluster, context=CLI_CONTEXT)
        member_id = found.id
    provision_here(settings, member_ids=[member_id])


# --- projects ------------------------------------------------------------------------------


@project_app.command("create")
def project_create(
    member: Annotated[str, typer.Argument(help="The member's slug.")],
    slug: Annotated[str, typer.Argument(help="The project's slug.")],
    *,
    name: Annotated[str, typer.Option(help="The project's name.")],
    domain: Annotated[Domain, typer.Option(help="Its use-case domain.")],
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
) -> None:
    """Create a project of a member."""
    data = _parse(ProjectCreate, slug=slug, name=name, domain=domain, description=description)
    if not MODE.local:
        with remote() as client:
            client.call("POST", f"{API}/members/{member}/projects",
                        json=data.model_dump(mode="json"))
    else:
        with _session(write=True) as (session, _):
            found = service.get_member(session, ACTOR, member)
            service.create_project(session, ACTOR, found, data, context=CLI_CONTEXT)
    console.print(f"project {member}/{slug} created", highlight=False)


@project_app.command("list")
def project_list(member: Annotated[str, typer.Argument(help="The member's slug.")]) -> None:
    """A member's projects."""
    if not MODE.local:
        with remote() as client:
            projects = [ProjectOut.model_validate(p)
                        for p in client.call("GET", f"{API}/members/{member}/projects")]
    else:
        with _session(write=False) as (session, _):
            found = service.get_member(session, ACTOR, member)
            projects = [ProjectOut.model_validate(p)
                        for p in service.list_projects(session, ACTOR, found)]
    table = Table("id", "slug", "name", "domain", "status")
    for p in projects:
        table.add_row(str(p.id), p.slug, escape(p.name), p.domain.value, p.status.value)
    console.print(table)


# --- invitations ---------------------------------------------------------------------------


@admin_app.command("invite")
def invite(
    member: Annotated[str, typer.Argument(help="The member's slug.")],
    email: Annotated[str, typer.Argument(help="Who to invite.")],
    role: Annotated[Role, typer.Option(help="Their role in the member.")] = Role.manager,
) -> None:
    """Invite someone to a member (by default its manager). The link goes by mail when the
    gateway has SMTP configured; otherwise it is printed here, to be passed on. It works once."""
    data = _parse(InvitationCreate, email=email, role=role)
    if not MODE.local:
        with remote() as client:
            made = InvitationCreated.model_validate(client.call(
                "POST", f"{API}/members/{member}/invitations",
                json=data.model_dump(mode="json")))
    else:
        with _session(write=True) as (session, settings):
            target = service.get_member(session, ACTOR, member)
            invitation, token = service.create_invitation(
                session, ACTOR, target, data, ttl=settings.invitation_ttl, context=CLI_CONTEXT)
            member_name = target.name
        # committed: the mail announces an invitation that exists
        link = service.invitation_link(settings.base_url, token)
        delivery = service.deliver_invitation(settings.smtp, invitation, member_name, link)
        made = InvitationCreated.of(invitation, utcnow(), mail=delivery.mail,
                                    mail_error=delivery.error, link=link)
    expires = f"{made.expires_at:%Y-%m-%d %H:%M} UTC"
    if made.mail == "sent":
        console.print(f"invitation {made.id} mailed to {made.email} (valid until {expires})",
                      highlight=False)
        return
    if made.mail_error:
        console.print(f"[yellow]the mail was not sent ({escape(made.mail_error)})[/yellow]")
    console.print(f"invitation {made.id} for {made.email}, valid once until {expires}; "
                  f"pass on this link:\n{made.link}", highlight=False, soft_wrap=True)


# --- users ---------------------------------------------------------------------------------


@user_app.command("list")
def user_list() -> None:
    """Every account, its flags and its memberships."""
    if not MODE.local:
        with remote() as client:
            users = [UserOut.model_validate(u) for u in client.call("GET", f"{API}/users")]
            slugs = _slugs(client.call("GET", f"{API}/members"))
    else:
        with _session(write=False) as (session, _):
            users = service.list_users(session, ACTOR)
            slugs = _slugs(service.list_members(session, ACTOR))
    table = Table("id", "email", "name", "admin", "active", "memberships")
    for user in users:
        table.add_row(str(user.id), escape(user.email), escape(user.name),
                      "yes" if user.is_admin else "", "yes" if user.is_active else "no",
                      ", ".join(f"{slugs.get(m.member_id, m.member_id)} ({m.role.value})"
                                for m in user.memberships))
    console.print(table)


def _slugs(members: Sequence[object]) -> dict[int, str]:
    """Member id -> slug, from the API's members or the database's."""
    return {m.id: m.slug for m in (MemberOut.model_validate(m) for m in members)}


def _change_user(email: str, change: UserUpdate) -> UserOut:
    """An administrator's change to an account, over the API or on the host."""
    if not MODE.local:
        with remote() as client:
            return UserOut.model_validate(client.call(
                "PATCH", f"{API}/users/{quote(email, safe='@')}",
                json=change.model_dump(mode="json", exclude_none=True)))
    with _session(write=True) as (session, _):
        if change.is_admin is not None:
            service.set_admin(session, ACTOR, email, change.is_admin, context=CLI_CONTEXT)
        if change.is_active is False:
            service.deactivate_user(session, ACTOR, email, context=CLI_CONTEXT)
        return service.user_view(session, service.get_user(session, ACTOR, email))


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Argument(help="The account's email (its login).")],
    name: Annotated[str, typer.Option(help="The person's name.")],
    admin: Annotated[bool, typer.Option("--admin", help="A consortium administrator.")] = False,
    password: Annotated[str, typer.Option(
        prompt=True, hide_input=True, confirmation_prompt=True,
        help="At least 12 characters, hard to guess (asked for when not given).")] = "",
) -> None:
    """Create an account with no membership (people of members come through invitations).
    Over the API an administrator does it; the very first administrator is made on the gateway
    host, with --local (`hpcgw admin --local user create EMAIL --name NAME --admin`)."""
    data = _parse(UserCreate, email=email, name=name, password=password, is_admin=admin)
    if not MODE.local:
        with remote() as client:
            user = UserOut.model_validate(client.call("POST", f"{API}/users",
                                                      json=data.model_dump(mode="json")))
    else:
        with _session(write=True) as (session, _):
            user = service.user_view(session, service.create_user(session, ACTOR, data,
                                                                  context=CLI_CONTEXT))
    console.print(f"user {user.email} created (id {user.id}"
                  f"{', administrator' if user.is_admin else ''})", highlight=False)


@user_app.command("set-admin")
def user_set_admin(
    email: Annotated[str, typer.Argument(help="The account's email.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the flag away.")] = False,
) -> None:
    """Make an account a consortium administrator (or no longer, with --revoke)."""
    user = _change_user(email, UserUpdate(is_admin=not revoke))
    console.print(f"user {user.email} is {'an' if user.is_admin else 'not an'} administrator",
                  highlight=False)


@user_app.command("deactivate")
def user_deactivate(email: Annotated[str, typer.Argument(help="The account's email.")]) -> None:
    """Disable an account: every credential of it stops working at once."""
    user = _change_user(email, UserUpdate(is_active=False))
    console.print(f"user {user.email} is deactivated", highlight=False)


# --- audit ---------------------------------------------------------------------------------


@admin_app.command("audit")
def audit(
    *,
    member: Annotated[str | None, typer.Option(help="A member's slug.")] = None,
    actor: Annotated[str | None, typer.Option(help="An email, or cli / system.")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. member.create")] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="How it ended.")] = None,
    since: Annotated[str | None, typer.Option(help="From (ISO 8601, inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Until (ISO 8601, exclusive).")] = None,
    before: Annotated[int | None, typer.Option(help="Events older than this id (paging).")]
    = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
) -> None:
    """The audit trail, newest first."""
    filters = AuditFilter(member=member, actor=actor, action=action, outcome=outcome,
                          since=_when(since, "--since"), until=_when(until, "--until"))
    if not MODE.local:
        query = {"limit": limit, **filters.model_dump(mode="json", exclude_none=True),
                 **({"cursor": before} if before is not None else {})}
        with remote() as client:
            page = client.call("GET", f"{API}/audit", params=query)
            slugs = _slugs(client.call("GET", f"{API}/members"))
        events = [AuditEventOut.model_validate(e) for e in page["items"]]
        next_id = None if page["next_cursor"] is None else int(page["next_cursor"])
    else:
        with _session(write=False) as (session, _):
            found, next_id = service.list_audit(session, ACTOR, filters, before_id=before,
                                                limit=limit)
            events = [AuditEventOut.model_validate(e) for e in found]
            slugs = _slugs(service.list_members(session, ACTOR))
    table = Table("id", "at (UTC)", "actor", "action", "outcome", "member", "target", "details")
    for e in events:
        table.add_row(
            str(e.id), f"{e.at:%Y-%m-%d %H:%M:%S}", escape(e.actor), e.action,
            e.outcome.value if e.outcome == Outcome.success
            else f"[bold red]{e.outcome.value}[/bold red]",
            slugs.get(e.member_id, str(e.member_id)) if e.member_id else "",
            f"{e.target_type} {e.target_id or ''}".strip(),
            escape(json.dumps(e.details, sort_keys=True)) if e.details else "",
        )
    console.print(table)
    if next_id is not None:
        console.print(f"more: --before {next_id}", highlight=False)
