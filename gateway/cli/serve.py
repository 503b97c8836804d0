"""`hpcgw serve`: the API under uvicorn, only on a database whose schema is at head."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from gateway import metrics, migrations
from gateway.cli.runtime import fail, first_line, load_settings
from gateway.logging import configure_logging
from gateway.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [settings: host].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [settings: port].")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the API. Refuses to start until `hpcgw db upgrade` has brought the schema to head."""
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = load_settings(**overrides)
    require_schema_at_head(settings)
    run(settings, workers=workers)


def require_schema_at_head(settings: Settings) -> None:
    """Exit unless the database exists and no migration is pending. Serving never migrates:
    several replicas starting together must not race to change the schema."""
    url = settings.effective_database_url
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        fail(f"there is no database at {parsed.database}: run `hpcgw db upgrade` first.")
    try:
        current, heads = migrations.pending(url)
    except SQLAlchemyError as exc:
        fail(f"cannot read the schema version of {shown}: {first_line(exc)}.")
    if current != heads:
        have = ", ".join(sorted(current)) or "empty"
        fail(f"the database {shown} is at revision {have} but this hpcgw needs "
             f"{', '.join(sorted(heads))}: run `hpcgw db upgrade`.")


def run(settings: Settings, *, workers: int = 1) -> None:
    """The API on settings.host:port: in this process, or in `workers` worker processes."""
    configure_logging(settings.log_level, settings.log_json)
    if workers > 1:
        from gateway.cli.workers import supervise  # imports the app: not for every command

        metrics.prepare_multiprocess(settings.data_dir)  # /metrics sums the workers
        supervise(settings.host, settings.port, workers)
        return
    from gateway.api.app import create_app
    from gateway.api.worker import settled, uvicorn_config

    uvicorn.Server(uvicorn_config(settings, settled(create_app(settings)))).run()
