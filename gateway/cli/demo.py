"""`hpcgw demo`: the embedded default, ready to try on one machine in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway import demo as embedded
from gateway import migrations
from gateway.cli.runtime import console, load_settings
from gateway.cli.serve import run
from gateway.db import Database


def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the database, key and jobs live.")] = Path(
        "hpcgw-data"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """SQLite, a local cluster and a demo consortium in DATA_DIR (kept across runs), then serve."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a comparison
    base_url = f"http://{shown_host}:{port}"
    settings = load_settings(
        demo=True,
        data_dir=data_dir,
        secret_key=embedded.read_or_create_secret(data_dir),
        host=host,
        port=port,
        base_url=base_url,
        log_json=False,
        clusters=[embedded.local_cluster(data_dir)],
    )
    migrations.upgrade(settings.effective_database_url)
    database = Database(settings.effective_database_url)
    try:
        logins = embedded.seed(database, data_dir)
    finally:
        database.dispose()

    # plain lines, never cut to the terminal's width: these must be copied exactly
    lines = [
        f"hpcgw demo: {base_url}   API docs: {base_url}/docs",
        f"data: {data_dir} (passwords kept in {embedded.CREDENTIALS_FILE}, mode 600)",
        "",
        f"  {'role':<11} {'member':<19} {'email':<44} password",
        *(f"  {c.role:<11} {c.member or '-':<19} {c.email:<44} {c.password}" for c in logins),
        "",
        "Stop with Ctrl-C; `hpcgw demo` again continues with the same data.",
    ]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    run(settings)  # logging is set up there, after the migrations: no Alembic chatter
