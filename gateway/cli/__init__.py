"""The `hpcgw` command line (console script `hpcgw = gateway.cli:app`)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated

import typer
from typer import _click as click  # typer's own click (vendored since typer 0.26)
from typer.core import TyperGroup

from gateway.cli.files import files_app
from gateway.cli.jobs import cancel, list_jobs, logs, status
from gateway.cli.login import login, logout
from gateway.cli.submit import submit
from gateway.cli.tokens import tokens_app
from gateway.cli.usage import usage

# The operators' commands, imported when one is called (or on --help): they load FastAPI and
# SQLAlchemy, which the researcher's commands never need (`hpcgw jobs` starts in about a
# fifth of the time). name -> (module, attribute: a command function or a Typer app)
OPERATOR_COMMANDS = {
    "serve": ("gateway.cli.serve", "serve"),
    "tracker": ("gateway.cli.tracker", "tracker_command"),
    "demo": ("gateway.cli.demo", "demo"),
    "db": ("gateway.cli.db", "db_app"),
    "config": ("gateway.cli.config", "config_app"),
    "clusters": ("gateway.cli.clusters", "clusters_app"),
    "admin": ("gateway.cli", "operators_admin_app"),
}


def operators_admin_app() -> typer.Typer:
    """`hpcgw admin`, with the quota commands mounted under it (once)."""
    from gateway.cli.admin import admin_app
    from gateway.cli.quotas import allocation_app, ledger_app, quotas_app

    mounted = {group.name for group in admin_app.registered_groups}
    for name, group in (("allocation", allocation_app), ("ledger", ledger_app),
                        ("quotas", quotas_app)):
        if name not in mounted:
            admin_app.add_typer(group, name=name)
    return admin_app


class _Commands(TyperGroup):
    """The researcher's commands, then the operators', loaded on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *OPERATOR_COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in OPERATOR_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = OPERATOR_COMMANDS[cmd_name]
        target = getattr(importlib.import_module(module), attribute)
        if target is operators_admin_app:
            target = target()
        if isinstance(target, typer.Typer):  # a group, even of one command (`config show`)
            command: click.Command = typer.main.get_group(target)
        else:
            single = typer.Typer()
            single.command(cmd_name)(target)
            command = typer.main.get_command(single)
        command.name = cmd_name
        return command


app = typer.Typer(
    name="hpcgw",
    cls=_Commands,
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


# the researcher's commands, named after the Slurm commands they replace (docs/cli.md)
app.command()(login)
app.command()(logout)
app.command()(submit)
app.command("jobs")(list_jobs)
app.command()(status)
app.command()(logs)
app.command()(cancel)
app.add_typer(files_app, name="files")
app.command()(usage)
app.add_typer(tokens_app, name="tokens")
