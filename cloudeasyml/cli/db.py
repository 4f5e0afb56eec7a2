"""``cloudeasyml db``: schema migrations (Alembic underneath)."""

from __future__ import annotations

import click
from alembic import command

from cloudeasyml.migrations_path import alembic_config
from cloudeasyml.settings import load_settings

__all__ = ("db", "upgrade_database")


def upgrade_database(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``."""
    command.upgrade(alembic_config(url), revision)


@click.group()
def db() -> None:
    """Migrate the database (CLOUDEASYML_DATABASE_URL, default SQLite)."""


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    url = load_settings().database_url
    upgrade_database(url, revision)
    click.echo(f"database at {revision}: {_safe(url)}")


# A relative revision such as -1 starts with a dash: without ignore_unknown_options click takes it for an option.
@db.command(context_settings={"ignore_unknown_options": True})
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION (e.g. -1, or base to drop everything)."""
    url = load_settings().database_url
    command.downgrade(alembic_config(url), revision)
    click.echo(f"database at {revision}: {_safe(url)}")


@db.command()
def current() -> None:
    """Show the schema revision of the database."""
    command.current(alembic_config(load_settings().database_url), verbose=False)


def _safe(url: str) -> str:
    """The URL without its password (secrets never reach logs or terminals)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
