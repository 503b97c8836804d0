"""`hpcgw submit SCRIPT [sbatch options]`: the script's `#SBATCH` lines are read by the
server's own parser (gateway.jobs.directives) to fail early with its line-numbered messages;
the script goes as written and the server applies them, the command line's options winning as
they do over sbatch's. The quote and the member's balance first; `--wait` follows the job to
its end and exits with its outcome."""

from __future__ import annotations

import json
import re
import time
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.client import API, CliError, Exit, Gateway, gateway, reports_errors
from gateway.cli.output import (
    JsonOption,
    ProfileOption,
    duration,
    emit_json,
    note,
    on_terminal,
    spinner,
    su,
)
from gateway.cli.runtime import err_console
from gateway.jobs import directives

_HUMAN_TIME = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
ENDED = frozenset({"completed", "failed", "cancelled", "timeout", "out_of_memory", "node_fail",
                   "submit_failed"})
POLL_SECONDS = 1.0


class WhenUnavailable(StrEnum):
    fail = "fail"
    queue = "queue"


def minutes(text: str) -> int:
    """A time limit as sbatch takes it (`90`, `1:30:00`, `2-00`), or `2h`, `1h30m`, `1d`."""
    try:
        return directives.minutes(text.strip())
    except ValueError as exc:
        found = _HUMAN_TIME.match(text.strip())
        if not found or not any(found.groups()):
            raise typer.BadParameter(f"{text!r}: {exc} (or 2h, 1h30m, 1d)") from exc
    days, hours, mins = (int(g or 0) for g in found.groups())
    return days * 1440 + hours * 60 + mins


def mebibytes(text: str) -> int:
    """Memory as sbatch takes it: `4096` (MiB), `512M`, `16G`, `1T`."""
    try:
        return directives.mebibytes(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: {exc}") from exc


def parameter(text: str) -> tuple[str, Any]:
    """`NAME=VALUE`, the value read as JSON when it is (3, true, 0.5), else as text."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise typer.BadParameter(f"give NAME=VALUE, not {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _job_body(script: Path | None, template: str | None, param: list[str] | None, *,
              project: str, job_name: str | None, cluster: str | None,
              workdir: str) -> tuple[dict[str, Any], int]:
    """The request but its resources, and the nodes the script's header asks for. The header
    is read here only to refuse early, with the server's messages, what the server refuses."""
    if (script is None) == (template is None):
        raise CliError("give a SCRIPT or --template", Exit.usage)
    if not project:
        raise CliError("--project/-A (member/project) is required (or HPCGW_PROJECT)",
                       Exit.usage)
    body: dict[str, Any] = {"project": int(project) if project.isdigit() else project,
                            "cluster": cluster, "workdir": workdir, "name": job_name}
    if script is None:
        return {**body, "template": template,
                "parameters": dict(parameter(p) for p in param or [])}, 1
    text = script.read_text()
    try:
        asked = directives.from_script(text)
    except directives.DirectivesRefused as exc:
        raise CliError(f"{script}: {'; '.join(exc.problems)}", Exit.usage) from exc
    if not job_name and asked.name is None:  # sbatch names a job after its script
        body["name"] = re.sub(r"[^A-Za-z0-9_.+-]", "-", script.stem).lstrip("-_.+") or None
    return {**body, "script": text}, int(asked.resources.get("nodes", 1))


@reports_errors
def submit(
    script: Annotated[Path | None, typer.Argument(
        exists=True, dir_okay=False, help="Batch script; its #SBATCH lines are read.")] = None,
    *,
    project: Annotated[str, typer.Option(
        "--project", "-A", envvar="HPCGW_PROJECT", help="`member/project` or its id.")] = "",
    time_limit: Annotated[str | None, typer.Option(
        "--time", "-t", help="Time limit: 90, 1:30:00, 2-00, 2h.")] = None,
    cpus_per_task: Annotated[int | None, typer.Option("--cpus-per-task", "-c", min=1)] = None,
    ntasks: Annotated[int | None, typer.Option("--ntasks", "-n", min=1)] = None,
    nodes: Annotated[int | None, typer.Option("--nodes", "-N", min=1)] = None,
    mem: Annotated[str | None, typer.Option(help="Memory per node, as sbatch: 4096, 16G.")]
    = None,
    gpus: Annotated[int | None, typer.Option("--gpus", "-G", min=0)] = None,
    partition_or_params: Annotated[list[str] | None, typer.Option(
        "--partition", "-p", help="The partition; with --template, NAME=VALUE is a template "
        "parameter (a partition name has no `=`), as -P.")] = None,
    job_name: Annotated[str | None, typer.Option("--job-name", "-J")] = None,
    array: Annotated[str | None, typer.Option(
        "--array", "-a", help="Task ids: 0-9, 1,3,5, 0-15:2%4.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Default: the gateway's first.")] = None,
    workdir: Annotated[str, typer.Option(
        "--chdir", "-D", help="Inside the member's work directory.")] = "",
    template: Annotated[str | None, typer.Option(help="A template instead of a script.")]
    = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-P", help="Template parameter NAME=VALUE (repeat).")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", "-W", help="Follow the job to its end; exit 1 unless it completed.")]
    = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", "--test-only", help="The quote only: nothing is submitted.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Retry-safe key (default: one per invocation).")] = None,
    when_unavailable: Annotated[WhenUnavailable | None, typer.Option(
        help="If the cluster cannot be reached: fail, or queue (the job waits, its quota "
        "held, and is sent once the cluster answers). Default: the cluster's setting, queue "
        "during a declared maintenance window.")] = None,
    max_wait: Annotated[str | None, typer.Option(
        help="With queue: how long the job may wait before it fails (as --time).")] = None,
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """Submit a batch script (or a template) like sbatch; prints the quote and the job."""
    partition, param = _partition_and_params(partition_or_params or [], param or [])
    body, script_nodes = _job_body(script, template, param, project=project,
                                   job_name=job_name, cluster=cluster, workdir=workdir)
    given: dict[str, Any] = {
        "partition": partition, "nodes": nodes, "ntasks": ntasks,
        "cpus_per_task": cpus_per_task, "gpus": gpus, "array": array,
        "time_limit_minutes": minutes(time_limit) if time_limit else None}
    if mem is not None:  # sbatch's --mem is per node; the API's mem_mb is the whole job's
        given["mem_mb"] = mebibytes(mem) * (nodes or script_nodes)
    body["resources"] = {k: v for k, v in given.items() if v is not None}
    if when_unavailable is not None:
        body["when_unavailable"] = when_unavailable.value
    if max_wait is not None:
        body["max_wait_minutes"] = minutes(max_wait)
    with gateway(profile) as client:
        with spinner("quoting"):
            quote = client.call("POST", f"{API}/jobs/quote", json=body)
        if not json_:
            _show_quote(quote)
        if dry_run or not quote["fits"]:
            if json_:
                emit_json({"quote": quote})
            if not quote["fits"]:
                raise CliError(quote.get("message") or "the quote does not fit the balance",
                               Exit.quota)
            return
        key = idempotency_key or f"cli-{uuid.uuid4()}"
        with spinner("submitting"):
            job = client.call("POST", f"{API}/jobs", json=body,
                              headers={"Idempotency-Key": key})
        if not json_:
            typer.echo(f"Submitted job {job['id']}"
                       + (f" (Slurm {job['scheduler_id']})" if job.get("scheduler_id") else "")
                       + (f": {waiting_text(job)}" if job["state"] == "waiting" else ""))
        if wait:
            job = follow(client, job["id"], quiet=json_)
        if json_:
            emit_json({"quote": quote, "job": job})
    if wait and job["state"] != "completed":
        raise typer.Exit(int(Exit.job_failed))


def _partition_and_params(values: list[str], params: list[str]) -> tuple[str | None, list[str]]:
    """`-p` as sbatch's partition, and as the issue's `--template NAME -p key=value`: a value
    with `=` is a template parameter (partition names cannot hold one)."""
    partitions = [v for v in values if "=" not in v]
    if len(partitions) > 1:
        raise CliError(f"one partition, not {', '.join(partitions)}", Exit.usage)
    return (partitions[0] if partitions else None), params + [v for v in values if "=" in v]


def _show_quote(quote: dict[str, Any]) -> None:
    r = quote["resources"]
    shape = (f"{r.get('nodes', 1)} node(s), {r.get('ntasks', 1)} task(s) x "
             f"{r.get('cpus_per_task', 1)} CPU(s), {r.get('mem_mb')} MiB, "
             f"{r.get('gpus', 0)} GPU(s), {duration(int(r['time_limit_minutes']) * 60)}")
    if r.get("array"):
        shape += f", array {r['array']} ({quote.get('tasks', 1)} tasks)"
    note(f"{quote['cluster']}/{quote['partition']}: {shape}")
    note(f"quote {su(quote['quote_msu'])} SU ({su(quote['rate_msu_per_hour'])} SU/h"
         f"{' per task' if quote.get('tasks', 1) > 1 else ''}); "
         f"available {su(quote['available_msu'])} SU")


def state_line(job: dict[str, Any]) -> str:
    line = f"{job['id']} {job['name']}: {job['state']}"
    if job.get("tasks"):
        line += " (" + ", ".join(f"{n} {s}" for s, n in sorted(job["tasks"].items())) + ")"
    if job.get("pending_reason_text") and job["state"] == "pending":
        line += f", {job['pending_reason_text']}"
    if job["state"] == "waiting":
        line += f", {waiting_text(job)}"
    if job.get("elapsed_seconds") is not None:
        line += f", {duration(job['elapsed_seconds'])}"
    return line


def waiting_text(job: dict[str, Any]) -> str:
    """What a `waiting` job waits for, and until when at most."""
    text = job.get("detail") or "waiting for the cluster"
    until = job.get("wait_until")  # ISO 8601 in UTC
    return text + (f", at most until {until[:16].replace('T', ' ')} UTC" if until else "")


def follow(client: Gateway, job_id: str, *, quiet: bool) -> dict[str, Any]:
    """Poll the job until it ends: a live line on a terminal, a line per change otherwise."""
    live = on_terminal() and not quiet
    shown = ""
    status = err_console.status(f"{job_id}: waiting") if live else None
    if status is not None:
        status.start()
    try:
        while True:
            job: dict[str, Any] = client.call("GET", f"{API}/jobs/{job_id}")
            line = state_line(job)
            if status is not None:
                status.update(line)
            elif not quiet and job["state"] != shown:
                note(line)
            shown = job["state"]
            if job["state"] in ENDED:
                break
            time.sleep(POLL_SECONDS)
    finally:
        if status is not None:
            status.stop()
    if not quiet:
        outcome = f"exit {job['exit_code']}" if job.get("exit_code") is not None else ""
        charge = f"charge {su(job.get('charge_msu'))} SU"
        note(f"{job['id']}: {job['state']}" + (f" ({outcome})" if outcome else "")
             + f", {charge}" + (f": {job['detail']}" if job.get("detail") else ""))
    return job
