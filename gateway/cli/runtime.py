"""What every command needs: the settings (or one clear paragraph and exit 2) and the consoles."""

from __future__ import annotations

import os
import tomllib
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console

from gateway.settings import Settings

console = Console()
err_console = Console(stderr=True)

SETTINGS_ERROR = 2  # the exit status of a configuration the gateway refuses


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one paragraph to stderr and exit: no traceback for a mistake the user can fix."""
    err_console.print("[bold red]error:[/bold red] ", end="")
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def first_line(exc: Exception) -> str:
    """An error in one line: SQLAlchemy's carry the SQL and a link after the driver's message."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def load_settings(**overrides: Any) -> Settings:
    """The effective settings: overrides, then HPCGW_* variables, then the HPCGW_CONFIG file."""
    source = "HPCGW_* environment variables" + (
        f" and {os.environ['HPCGW_CONFIG']}" if os.environ.get("HPCGW_CONFIG") else ""
    )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        fail(f"hpcgw cannot start with this configuration (from {source}): {problems}.",
             SETTINGS_ERROR)
    except tomllib.TOMLDecodeError as exc:
        fail(f"{os.environ['HPCGW_CONFIG']} is not valid TOML: {exc}.", SETTINGS_ERROR)
    except (SettingsError, OSError) as exc:
        fail(f"hpcgw cannot read its configuration (from {source}): {exc}.", SETTINGS_ERROR)


def _describe(error: Any) -> str:
    # never the input: it may be the secret that was refused
    message = str(error["msg"]).removeprefix("Value error, ")
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {message}" if location else message
