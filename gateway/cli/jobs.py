"""The researcher's job commands, squeue/scontrol/scancel-like: `hpcgw jobs` (the table),
`hpcgw status ID`, `hpcgw logs ID [--follow] [--task N]`, `hpcgw cancel ID...`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from gateway.cli.client import API, CliError, Exit, Gateway, gateway, reports_errors
from gateway.cli.output import (
    JsonOption,
    ProfileOption,
    duration,
    emit_json,
    note,
    spinner,
    su,
    table,
)
from gateway.cli.submit import state_line

COLUMNS = ("ID", "NAME", "PROJECT", "USER", "STATE", "ELAPSED", "QUOTE_SU", "CHARGE_SU")
PAGE = 200


class Directory:
    """Names for the ids a job carries: `member/project` and users' emails, as far as the
    caller may read them (a researcher sees the users of no member but its own self)."""

    def __init__(self, client: Gateway) -> None:
        me = client.call("GET", f"{API}/me")
        self.me: int = me["id"]
        self.users: dict[int, str] = {me["id"]: me["email"]}
        self.projects: dict[int, str] = {}
        for membership in me["memberships"]:
            slug = membership["member_slug"]
            for project in self._read(client, f"{API}/members/{slug}/projects"):
                self.projects[project["id"]] = f"{slug}/{project['slug']}"
            if membership["role"] == "manager":
                for user in self._read(client, f"{API}/members/{slug}/users"):
                    self.users[user["user_id"]] = user["email"]

    @staticmethod
    def _read(client: Gateway, path: str) -> list[dict[str, Any]]:
        """Names are a convenience: a token whose scopes do not reach them shows ids."""
        try:
            found: list[dict[str, Any]] = client.call("GET", path)
        except CliError as exc:
            if exc.code is not Exit.auth:
                raise
            return []
        return found

    def project_id(self, reference: str) -> int:
        if reference.isdigit():
            return int(reference)
        found = [i for i, name in self.projects.items() if name == reference]
        if not found:
            raise CliError(f"no project {reference!r} among yours", Exit.not_found)
        return found[0]


@reports_errors
def list_jobs(
    *,
    state: Annotated[list[str] | None, typer.Option(
        "--state", "-t", help="Repeat for several (pending, running, completed ...).")] = None,
    project: Annotated[str | None, typer.Option(
        "--project", "-A", help="`member/project` or its id.")] = None,
    me: Annotated[bool, typer.Option("--me", help="Only your own jobs.")] = False,
    cluster: Annotated[str | None, typer.Option("--cluster", "-M")] = None,
    since: Annotated[datetime | None, typer.Option(help="Created at or after.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 50,
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """Your members' jobs, newest first (squeue -a, sacct)."""
    with gateway(profile) as client, spinner("reading the jobs"):
        names = Directory(client)
        params: dict[str, Any] = {"state": state or [], "cluster": cluster,
                                  "since": since.isoformat() if since else None,
                                  "project": names.project_id(project) if project else None,
                                  "user": names.me if me else None}
        jobs: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(jobs) < limit:
            page = client.call("GET", f"{API}/jobs", params={
                **{k: v for k, v in params.items() if v not in (None, [])},
                "limit": min(PAGE, limit - len(jobs)), **({"cursor": cursor} if cursor else {})})
            jobs.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
    if json_:
        emit_json(jobs)
        return
    table(COLUMNS, [
        (j["id"], j["name"], names.projects.get(j["project_id"], j["project_id"]),
         names.users.get(j["user_id"], f"user {j['user_id']}"), _state(j),
         duration(j["elapsed_seconds"]), su(j["quote_msu"]), su(j["charge_msu"]))
        for j in jobs])


def _state(job: dict[str, Any]) -> str:
    if job.get("tasks"):
        return str(job["state"]) + " " + ",".join(f"{n}{s[0].upper()}" for s, n in
                                             sorted(job["tasks"].items()))
    return str(job["state"])


@reports_errors
def status(job_id: str, profile: ProfileOption = None, json_: JsonOption = False) -> None:
    """A job: its state, resources, quote and charge, events and tasks (scontrol show job)."""
    with gateway(profile) as client:
        job = client.call("GET", f"{API}/jobs/{job_id}")
    if json_:
        emit_json(job)
        return
    typer.echo(state_line(job))
    r = job["resources"]
    fields = [
        ("cluster", f"{job['cluster']}/{r.get('partition')}"),
        ("slurm id", job["scheduler_id"]),
        ("resources", f"{r.get('nodes')} node(s), {r.get('ntasks')} x {r.get('cpus_per_task')}"
                      f" CPU(s), {r.get('mem_mb')} MiB, {r.get('gpus')} GPU(s), "
                      f"{duration(int(r.get('time_limit_minutes', 0)) * 60)}"),
        ("array", job.get("array")),
        ("quote", f"{su(job['quote_msu'])} SU"),
        ("charge", f"{su(job['charge_msu'])} SU"),
        ("exit code", job["exit_code"]),
        ("stdout", job["stdout_path"]),
        ("detail", job["detail"]),
    ]
    for label, value in fields:
        if value is not None:
            typer.echo(f"  {label:<10} {value}")
    for event in job["events"]:
        typer.echo(f"  {event['at'][:19]}  {event['from_state'] or '-'} -> {event['to_state']}"
                   + (f"  {event['detail']}" if event.get("detail") else ""))
    for task in job.get("array_tasks") or []:
        typer.echo(f"  task {task['task_id']:<5} {task['state']:<13} "
                   f"{duration(task['elapsed_seconds'])}  exit {task['exit_code']}")


@reports_errors
def logs(
    job_id: str,
    *,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Print lines as the job writes them, until it ends.")] = False,
    task: Annotated[int | None, typer.Option(help="A job array's task.")] = None,
    stderr: Annotated[bool, typer.Option("--stderr", help="The error stream.")] = False,
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """The job's output (`--json`: one JSON object per chunk, one a line)."""
    params: dict[str, Any] = {"stream": "stderr" if stderr else "stdout", "offset": 0,
                              **({"task": task} if task is not None else {})}
    with gateway(profile) as client:
        if follow:
            _follow(client, job_id, params, json_)
            return
        while True:
            chunk = client.call("GET", f"{API}/jobs/{job_id}/output", params=params)
            _print(chunk, json_)
            if chunk["next_offset"] >= chunk["size"] or chunk["next_offset"] == params["offset"]:
                return
            params["offset"] = chunk["next_offset"]


def _follow(client: Gateway, job_id: str, params: dict[str, Any], json_: bool) -> None:
    """The output stream, reopened where it stopped while the job runs (each is bounded)."""
    while True:
        with client.events(f"{API}/jobs/{job_id}/output", {**params, "follow": "true"}) as stream:
            end: dict[str, Any] | None = None
            for event, data in stream:
                if event == "output":
                    _print(data, json_)
                    params["offset"] = data["next_offset"]
                elif event == "end":
                    end = data
        if end is not None and end["complete"]:
            return
        if end is not None:
            params["offset"] = end["next_offset"]


def _print(chunk: dict[str, Any], json_: bool) -> None:
    if json_:
        typer.echo(json.dumps(chunk))
    elif chunk["data"]:
        typer.echo(chunk["data"], nl=False)


@reports_errors
def cancel(
    job_ids: Annotated[list[str], typer.Argument(help="One or more job ids.")],
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """Cancel jobs (scancel); each is idempotent. Exit 4 if one was not found."""
    done: list[dict[str, Any]] = []
    worst: CliError | None = None
    with gateway(profile) as client:
        for job_id in job_ids:
            try:
                job = client.call("POST", f"{API}/jobs/{job_id}/cancel")
            except CliError as exc:
                note(f"{job_id}: {exc}")
                worst = worst or exc
                continue
            done.append(job)
            if not json_:
                typer.echo(f"{job['id']}: {job['state']}"
                           + (" (cancel requested)" if job["cancel_requested"]
                              and job["state"] not in ("cancelled",) else ""))
    if json_:
        emit_json(done)
    if worst is not None:
        raise typer.Exit(int(worst.code))
