"""The `hpcgw` command line (console script `hpcgw = gateway.cli:app`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.admin import admin_app
from gateway.cli.clusters import clusters_app
from gateway.cli.config import config_app
from gateway.cli.db import db_app
from gateway.cli.demo import demo
from gateway.cli.jobs import jobs_app, submit, tracker_command
from gateway.cli.quotas import allocation_app, ledger_app, quotas_app
from gateway.cli.serve import serve

app = typer.Typer(
    name="hpcgw",
    help="Gateway between the Montpellier AI consortium and its Slurm clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)


@app.callback()
def main(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", envvar="HPCGW_CONFIG", exists=True, dir_okay=False,
        help="TOML configuration file (HPCGW_* variables override it).")] = None,
) -> None:
    if config is not None:
        os.environ["HPCGW_CONFIG"] = str(config)


app.command()(serve)
app.command("tracker")(tracker_command)
app.command()(demo)
app.add_typer(jobs_app, name="jobs")
app.command("submit", help="Same as `hpcgw jobs submit` (PRODUCT.md's example).")(submit)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(clusters_app, name="clusters")
admin_app.add_typer(allocation_app, name="allocation")
admin_app.add_typer(ledger_app, name="ledger")
admin_app.add_typer(quotas_app, name="quotas")
app.add_typer(admin_app, name="admin")
