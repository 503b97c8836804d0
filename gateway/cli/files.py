"""`hpcgw files ls|get|put`: a job's working directory, listed and downloaded; a file uploaded
to the member's work directory on a cluster (what `scp` to the cluster did)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.client import API, gateway, member_slug, reports_errors
from gateway.cli.output import JsonOption, ProfileOption, emit_json, note, table

files_app = typer.Typer(help="A job's files, and uploads to your member's work directory.",
                        no_args_is_help=True)


@files_app.command("ls")
@reports_errors
def list_files(
    job_id: str,
    path: Annotated[str, typer.Argument(help="A directory of the job's workdir.")] = "",
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """The entries of a directory of the job's working directory."""
    with gateway(profile) as client:
        listing = client.call("GET", f"{API}/jobs/{job_id}/files",
                              params={"path": path} if path else {})
    if json_:
        emit_json(listing)
        return
    table(("NAME", "TYPE", "SIZE", "MODIFIED"),
          [(e["name"] + ("/" if e["type"] == "dir" else ""), e["type"], e.get("size"),
            e.get("modified")) for e in listing["entries"]])


@files_app.command("get")
@reports_errors
def get_file(
    job_id: str,
    path: Annotated[str, typer.Argument(help="The file, in the job's workdir.")],
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Where to write it (`-` for stdout); default: its name.")]
    = None,
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """Download a file of the job's working directory (a checkpoint, a result)."""
    with gateway(profile) as client:
        data = client.request("GET", f"{API}/jobs/{job_id}/files/{path}").content
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    target = Path(output or Path(path).name)
    target.write_bytes(data)
    if json_:
        emit_json({"path": path, "written": str(target), "size": len(data)})
        return
    note(f"{path} -> {target} ({len(data)} bytes)")


@files_app.command("put")
@reports_errors
def put_file(
    local: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    path: Annotated[str | None, typer.Argument(
        help="Where, in the member's work directory (default: the file's name).")] = None,
    *,
    member: Annotated[str | None, typer.Option(help="Default: your only member.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Default: the gateway's first.")] = None,
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """Upload a file (a dataset, a config) for your jobs to read."""
    with gateway(profile) as client:
        slug = member_slug(client, member)
        written = client.call("PUT", f"{API}/members/{slug}/files/{path or local.name}",
                              content=local.read_bytes(),
                              params={"cluster": cluster} if cluster else {})
    if json_:
        emit_json(written)
        return
    note(f"{local} -> {slug}:{written['path']} on {written['cluster']} "
         f"({written['size']} bytes)")
