"""Alembic environment (async). The URL is the ``sqlalchemy.url`` option when a caller sets it, else settings."""

from __future__ import annotations

import asyncio
from logging.config import dictConfig
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cloudeasyml.db import models  # noqa: F401  (registers the tables on Base.metadata)
from cloudeasyml.db.base import Base
from cloudeasyml.settings import load_settings

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"generic": {"format": "%(levelname)-5.5s [%(name)s] %(message)s", "datefmt": "%H:%M:%S"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "generic"}},
    "root": {"level": "WARNING", "handlers": ["console"]},
    "loggers": {"sqlalchemy.engine": {"level": "WARNING"}, "alembic": {"level": "INFO"}},
}
"""Alembic's progress lines ("Running upgrade ...") on stderr, everything else from WARNING. Here rather than in
``alembic.ini``: an installed wheel has no ini file (``cloudeasyml/migrations_path.py`` builds the config in code)."""

config = context.config
if config.attributes.get("configure_logging", True):
    dictConfig(LOGGING)

target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    if url.startswith("sqlite") and ":///" in url:
        database = url.split(":///", 1)[1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    return url


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    # Batch mode lets ALTER TABLE work on SQLite (copy-and-move) while being plain ALTER on PostgreSQL.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    """Run against a live database."""
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
