"""Alembic environment: one MetaData (consortium.base.Base) holding every domain's tables."""

from __future__ import annotations

import os
from logging.config import fileConfig

from sqlalchemy import Connection

from alembic import context
from gateway.models import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from gateway.db import make_engine

    # the `alembic` command line: the URL from the environment, else the embedded default
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("HPCGW_DATABASE_URL")
    if not url:
        from gateway.settings import Settings

        url = Settings(demo=True).effective_database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `hpcgw db upgrade`")
run_migrations_online()
