"""`hpcgw config show`: the effective configuration, every secret masked."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import tomli_w
import typer

from gateway.cli.runtime import load_settings

config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)


class Format(StrEnum):
    toml = "toml"
    json = "json"


@config_app.command()
def show(
    output: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.toml,
) -> None:
    """Print the configuration in effect (defaults, HPCGW_* variables, HPCGW_CONFIG file)."""
    data = load_settings().masked()
    if output is Format.json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        typer.echo(tomli_w.dumps(_without_none(data)), nl=False)


def _without_none(value: Any) -> Any:
    # TOML has no null: an unset option is simply absent
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
