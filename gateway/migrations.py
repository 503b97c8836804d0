"""Alembic, driven from code (`hpcgw db upgrade`, the tests' database setup)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic.config import Config
from sqlalchemy import Connection

from alembic import command

# alembic.ini and alembic/: beside the packages in a checkout; in <prefix>/share/hpcgw where a
# wheel installs them (pyproject.toml's data-files)
_SOURCE = Path(__file__).resolve().parent.parent
ROOT = _SOURCE if (_SOURCE / "alembic.ini").is_file() else Path(sys.prefix) / "share" / "hpcgw"


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["configure_logger"] = False
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raise if the models and the migrations disagree (alembic check)."""
    command.check(alembic_config(url))


def pending(url: str) -> tuple[set[str], set[str]]:
    """(the database's revisions, the code's heads): equal when no migration is pending."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from gateway.db import make_engine

    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    return current, heads
