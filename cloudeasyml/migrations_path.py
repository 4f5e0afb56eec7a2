"""Where the Alembic environment lives, for the CLI and the readiness probe.

The repository keeps ``alembic.ini`` and ``migrations/`` at its root (``alembic`` commands work from there);
``cloudeasyml/alembic.ini`` and ``cloudeasyml/migrations`` are links to them, which setuptools copies into the
wheel as package data. An installed platform therefore migrates its database and answers its readiness probe
from its own files, with no checkout at hand.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

__all__ = ("alembic_config",)

HERE = Path(__file__).resolve().parent
"""The ``cloudeasyml`` package directory (a checkout's, or an installed wheel's)."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config over the package's ``alembic.ini`` and ``migrations/``; ``url`` overrides the database
    (otherwise settings decide).
    """
    config = Config(str(HERE / "alembic.ini"))
    config.set_main_option("script_location", str(HERE / "migrations"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config
