"""`hpcgw serve`: the API under uvicorn, only on a database whose schema is at head."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.supervisors import Multiprocess

from gateway import metrics, migrations
from gateway.cli.runtime import fail, first_line, load_settings
from gateway.logging import configure_logging
from gateway.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

GRACEFUL_SHUTDOWN_SECONDS = 30


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
    """uvicorn on settings.host:port; forwarded headers are believed only from trusted proxies."""
    configure_logging(settings.log_level, settings.log_json)
    proxies = settings.trusted_proxies
    if workers == 1:
        from gateway.api.app import create_app
        from gateway.api.worker import settled

        target: FastAPI | str = settled(create_app(settings))
    else:
        # each worker process builds its app from the same environment this one validated
        target = "gateway.api.worker:app_from_environment"
        metrics.prepare_multiprocess(settings.data_dir)  # /metrics sums the workers
    config = uvicorn.Config(
        target,
        factory=workers > 1,
        host=settings.host,
        port=settings.port,
        workers=workers,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        log_config=None,  # our structlog setup renders uvicorn's records too
        server_header=False,
        # asyncio's loop, not uvloop: measured with 500 clients on one process, uvloop left some
        # connections unanswered for seconds (p99 5-7 s) where asyncio's stays fair (bench/)
        loop="asyncio",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return
    sock = config.bind_socket()
    # uvicorn makes this socket without naming TCP, so asyncio does not set TCP_NODELAY on the
    # connections it accepts from it (every answer then waited ~40 ms for the client's delayed
    # ACK); Linux gives accepted connections the listening socket's TCP_NODELAY
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()
