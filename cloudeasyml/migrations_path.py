"""Where the Alembic environment lives, for the CLI and the readiness probe."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

__all__ = ("alembic_config",)

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config over the repository's ``alembic.ini`` and ``migrations/``; ``url`` overrides the
    database (otherwise settings decide).
    """
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config
