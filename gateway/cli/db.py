"""`hpcgw db`: bring the schema to head, or check that the models and migrations agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from alembic.util.exc import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from gateway import migrations
from gateway.cli.runtime import console, fail, first_line, load_settings

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the pending migrations (creates the SQLite file and its directory if needed)."""
    url = load_settings().effective_database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shown = parsed.render_as_string(hide_password=True)
    try:
        migrations.upgrade(url, revision)
        current, _ = migrations.pending(url)
    except (CommandError, SQLAlchemyError) as exc:
        fail(f"cannot upgrade {shown}: {first_line(exc)}.")
    console.print(f"{shown} is at revision {', '.join(sorted(current))}", highlight=False,
                  soft_wrap=True)


@db_app.command()
def check() -> None:
    """Exit 1 if the database is not at head or the models differ from the migrations."""
    url = load_settings().effective_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        migrations.check(url)
    except (CommandError, SQLAlchemyError) as exc:
        fail(f"{shown}: {first_line(exc)}")
    console.print(f"{shown}: no difference between the models and the migrations",
                  highlight=False, soft_wrap=True)
