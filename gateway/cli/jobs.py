"""`hpcgw tracker` (the job trackers without the API) and `hpcgw jobs ...` (a client of the API:
submit, list, show, cancel, logs)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import typer

from gateway.cli.runtime import console, fail, load_settings
from gateway.cli.serve import require_schema_at_head
from gateway.db import Database
from gateway.jobs.clusters import Clusters
from gateway.jobs.runtime import build_schedulers, close_schedulers, seed
from gateway.jobs.tracker import ClusterTracker, run_trackers
from gateway.logging import configure_logging
from gateway.settings import Settings
from gateway.webhooks.delivery import webhooks_runtime
from gateway.webhooks.service import install as install_webhooks


def tracker_command(
    once: Annotated[bool, typer.Option(
        "--once", help="One cycle per cluster, a summary, and exit.")] = False,
) -> None:
    """Follow every job of every configured cluster to its end (one tracker per cluster across
    replicas) and send the webhooks. Runs until SIGINT/SIGTERM; `hpcgw serve` runs the same
    loops unless `jobs.tracker_in_serve` (`webhooks.worker_in_serve`) is false."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    require_schema_at_head(settings)
    if not settings.clusters:
        fail("no cluster is configured (see `clusters` in `hpcgw config show`)")
    anyio.run(_track_once if once else _track, settings)


async def _track(settings: Settings) -> None:
    database = Database(settings.effective_database_url)
    schedulers = build_schedulers(settings)
    stop = anyio.Event()
    try:
        await seed(database)
        async with (webhooks_runtime(settings, database, worker=True),
                    anyio.create_task_group() as group):
            group.start_soon(_stop_on_signal, stop)
            await run_trackers(settings, database, schedulers, stop)
            group.cancel_scope.cancel()
    finally:
        await close_schedulers(schedulers)
        database.dispose()


async def _stop_on_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            return


async def _track_once(settings: Settings) -> None:
    database = Database(settings.effective_database_url)
    schedulers = build_schedulers(settings)
    try:
        install_webhooks()
        for cluster in Clusters(settings.clusters, schedulers):
            report = await ClusterTracker(database, cluster, settings.jobs).cycle()
            if not report.leader:
                console.print(f"{cluster.name}: another tracker holds this cluster",
                              highlight=False)
                continue
            console.print(f"{cluster.name}: {report.tracked} job(s) followed, "
                          f"{len(report.changes)} change(s)", highlight=False)
            for public_id, before, after in report.changes:
                console.print(f"  {public_id}: {before} -> {after}", highlight=False)
    finally:
        await close_schedulers(schedulers)
        database.dispose()


# --- the API client ----------------------------------------------------------------------

jobs_app = typer.Typer(
    help="Jobs through the API (HPCGW_URL, default http://127.0.0.1:8000; HPCGW_TOKEN: a "
         "personal access token or a session token).",
    no_args_is_help=True,
)
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
_SIZE = re.compile(r"^(\d+)([MGT]?)i?B?$", re.IGNORECASE)


def minutes(text: str) -> int:
    """A time limit: `90` (minutes), `2h`, `1h30m`, `1d`, or `[D-]HH:MM:SS` as Slurm writes it."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if ":" in text:
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        hours, mins, secs = ([0] * (3 - len(parts)) + parts)[-3:]
        total = int(days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)
        return max(total, 1)
    match = _DURATION.match(text)
    if not match or not any(match.groups()):
        raise typer.BadParameter(f"not a duration: {text!r} (e.g. 90, 2h, 1h30m, 02:00:00)")
    d, h, m = (int(g or 0) for g in match.groups())
    return d * 1440 + h * 60 + m


def megabytes(text: str) -> int:
    """Memory: `1024` (MiB), `512M`, `16G`, `1T`."""
    match = _SIZE.match(text.strip())
    if not match:
        raise typer.BadParameter(f"not a memory size: {text!r} (e.g. 4096, 512M, 16G)")
    factor = {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[match.group(2).upper()]
    return int(match.group(1)) * factor


def _client() -> httpx.Client:
    token = os.environ.get("HPCGW_TOKEN")
    if not token:
        fail("set HPCGW_TOKEN to a personal access token (POST /api/v1/me/tokens)")
    url = os.environ.get("HPCGW_URL", "http://127.0.0.1:8000")
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                        timeout=60.0)


def _call(method: str, path: str, **kwargs: Any) -> Any:
    try:
        with _client() as client:
            answer = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway: {exc}")
    body = answer.json() if answer.content else None
    if answer.status_code >= 400:
        detail = body.get("detail") if isinstance(body, dict) else answer.text
        fail(f"{answer.status_code}: {detail}")
    return body


@jobs_app.command()
def submit(
    script: Annotated[Path | None, typer.Argument(
        exists=True, dir_okay=False, help="Batch script (omit with --template).")] = None,
    *,
    project: Annotated[str, typer.Option(help="`member/project` or the project's id.")] = "",
    partition: Annotated[str, typer.Option(help="Partition of the cluster.")] = "cpu",
    time: Annotated[str, typer.Option("--time", "-t", help="Time limit: 90, 2h, 1h30m.")] = "1h",
    mem: Annotated[str, typer.Option(help="Memory of the job: 4096, 4G.")] = "4G",
    gpus: Annotated[int, typer.Option(min=0)] = 0,
    nodes: Annotated[int, typer.Option(min=1)] = 1,
    ntasks: Annotated[int, typer.Option(min=1)] = 1,
    cpus: Annotated[int, typer.Option("--cpus-per-task", "-c", min=1)] = 1,
    name: Annotated[str | None, typer.Option(help="Default: the script's name.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Default: the first cluster.")] = None,
    workdir: Annotated[str, typer.Option(help="Inside the member's work directory.")] = "",
    template: Annotated[str | None, typer.Option(help="A template instead of a script.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Template parameter NAME=VALUE (JSON values: 3, true, \"x\").")]
    = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Retry-safe key: the same key never submits twice.")] = None,
) -> None:
    """Submit a job and print it (JSON)."""
    if (script is None) == (template is None):
        fail("give a SCRIPT or --template")
    if not project:
        fail("--project is required (member/project)")
    body: dict[str, Any] = {
        "project": int(project) if project.isdigit() else project,
        "name": name or (script.stem if script else template),
        "cluster": cluster, "workdir": workdir,
        "resources": {"partition": partition, "nodes": nodes, "ntasks": ntasks,
                      "cpus_per_task": cpus, "gpus": gpus, "mem_mb": megabytes(mem),
                      "time_limit_minutes": minutes(time)},
    }
    if script is not None:
        body["script"] = script.read_text()
    else:
        body["template"] = template
        body["parameters"] = dict(_parameter(p) for p in param or [])
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = _call("POST", "/api/v1/jobs", json=body, headers=headers)
    typer.echo(json.dumps(job, indent=2))


def _parameter(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep:
        raise typer.BadParameter(f"--param takes NAME=VALUE, not {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


@jobs_app.command("list")
def list_jobs(
    state: Annotated[list[str] | None, typer.Option(help="Repeat for several.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """The newest jobs of your members."""
    page = _call("GET", "/api/v1/jobs", params={"state": state or [], "limit": limit})
    for job in page["items"]:
        typer.echo(f"{job['id']}  {job['state']:<13} {job['cluster']:<10} "
                   f"{job['scheduler_id'] or '-':<10} {job['name']}")


@jobs_app.command()
def show(job_id: str) -> None:
    """A job, its events and its charge (JSON)."""
    typer.echo(json.dumps(_call("GET", f"/api/v1/jobs/{job_id}"), indent=2))


@jobs_app.command()
def cancel(job_id: str) -> None:
    """Cancel a job (idempotent)."""
    job = _call("POST", f"/api/v1/jobs/{job_id}/cancel")
    typer.echo(f"{job['id']}: {job['state']}"
               + (" (cancel requested)" if job["cancel_requested"] else ""))


@jobs_app.command()
def logs(job_id: str, stderr: Annotated[bool, typer.Option("--stderr")] = False) -> None:
    """Print the job's output as it stands."""
    stream = "stderr" if stderr else "stdout"
    offset = 0
    while True:
        chunk = _call("GET", f"/api/v1/jobs/{job_id}/output",
                      params={"stream": stream, "offset": offset})
        typer.echo(chunk["data"], nl=False)
        if chunk["next_offset"] >= chunk["size"] or chunk["next_offset"] == offset:
            return
        offset = chunk["next_offset"]
