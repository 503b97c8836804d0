"""`hpcgw tokens list|create|revoke`: personal access tokens, for scripts and CI (the token is
shown once, at creation)."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.client import API, gateway, reports_errors
from gateway.cli.output import JsonOption, ProfileOption, emit_json, note, table

tokens_app = typer.Typer(help="Your personal access tokens.", no_args_is_help=True)


@tokens_app.command("list")
@reports_errors
def list_tokens(profile: ProfileOption = None, json_: JsonOption = False) -> None:
    """Your tokens not revoked; never their secret."""
    with gateway(profile) as client:
        items = client.call("GET", f"{API}/me/tokens")["items"]
    if json_:
        emit_json(items)
        return
    table(("ID", "NAME", "PREFIX", "SCOPES", "MEMBER", "EXPIRES", "LAST_USED"),
          [(t["id"], t["name"], t["display_prefix"], ",".join(t["scopes"]), t["member_id"],
            (t["expires_at"] or "-")[:10], (t["last_used_at"] or "-")[:16])
           for t in items])


@tokens_app.command("create")
@reports_errors
def create_token(
    name: str,
    *,
    scope: Annotated[list[str], typer.Option(
        "--scope", "-s", help="Repeat: jobs:read, jobs:write, usage:read ...")],
    member_id: Annotated[int | None, typer.Option(
        "--member-id", help="Confine the token to one of your members.")] = None,
    days: Annotated[int | None, typer.Option(min=1, max=365, help="Lifetime in days.")]
    = None,
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """Mint a token; it is printed once, on stdout."""
    body = {"name": name, "scopes": scope, "member_id": member_id, "expires_in_days": days}
    with gateway(profile) as client:
        created = client.call("POST", f"{API}/me/tokens",
                              json={k: v for k, v in body.items() if v is not None})
    if json_:
        emit_json(created)
        return
    note(f"token {created['id']} ({created['name']}), expires {created['expires_at']}: "
         "shown this once")
    typer.echo(created["token"])


@tokens_app.command("revoke")
@reports_errors
def revoke_tokens(
    token_ids: Annotated[list[int], typer.Argument(help="The tokens' ids (`tokens list`).")],
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """Revoke tokens, from their next request on."""
    with gateway(profile) as client:
        for token_id in token_ids:
            client.call("DELETE", f"{API}/me/tokens/{token_id}")
    if json_:
        emit_json({"revoked": token_ids})
        return
    note(f"revoked {', '.join(map(str, token_ids))}")
