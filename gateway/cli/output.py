"""What the researcher's commands print: JSON with `--json` (for scripts), a rich table and a
spinner on a terminal, plain aligned columns with headers otherwise (pipes, grep, awk)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli.runtime import console, err_console

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
ProfileOption = Annotated[str | None, typer.Option(
    "--profile", envvar="HPCGW_PROFILE", help="The gateway's profile (`hpcgw login`).")]


def on_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    if on_terminal():
        grid = Table(*columns, box=None, header_style="bold", pad_edge=False)
        for row in cells:
            grid.add_row(*row)
        console.print(grid)
        return
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for row in [list(columns), *cells]:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def note(message: str) -> None:
    """A line for the person, on stderr: stdout stays for data."""
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def spinner(message: str) -> Iterator[None]:
    """A spinner while waiting, on a terminal only."""
    context = err_console.status(message) if sys.stderr.isatty() else nullcontext()
    with context:
        yield


def su(msu: int | None) -> str:
    """milli-SU as SU, three decimals."""
    return "-" if msu is None else f"{msu / 1000:.3f}"


def duration(seconds: int | None) -> str:
    """Seconds as squeue writes elapsed time: [D-]HH:MM:SS."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock
