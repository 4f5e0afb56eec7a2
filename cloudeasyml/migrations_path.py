"""Where the Alembic environment lives, for the CLI and the readiness probe.

The repository keeps ``alembic.ini`` and ``migrations/`` at its root (``alembic`` commands work from there). A wheel
carries ``migrations/`` as the package ``cloudeasyml.migrations`` (``setup.py`` maps it with ``package_dir``; no link
in the tree, so a Windows checkout works), and the Alembic config is built here in code, so the wheel needs no
``alembic.ini``. An installed platform therefore migrates its database and answers its readiness probe from its own
files, with no checkout at hand.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

__all__ = ("ALEMBIC_OPTIONS", "alembic_config", "migrations_dir")

HERE = Path(__file__).resolve().parent
"""The ``cloudeasyml`` package directory (a checkout's, or an installed wheel's)."""

ALEMBIC_OPTIONS = {
    "file_template": "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s_%%(rev)s",
    "path_separator": "os",
    "timezone": "UTC",
}
"""The ``[alembic]`` options of the root ``alembic.ini`` besides its paths, as written there (``%`` doubled);
tests/unit/test_packaging.py keeps the two in step."""


def migrations_dir() -> Path:
    """The Alembic environment: the wheel's ``cloudeasyml/migrations``, else the checkout's root ``migrations/``.

    Raises:
        FileNotFoundError: neither holds an ``env.py`` (a broken install).
    """
    # The package's own copy first: in an installed wheel, the directory above the package is site-packages.
    for candidate in (HERE / "migrations", HERE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"no Alembic environment (migrations/env.py) in {HERE} or {HERE.parent}")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config over the package's ``migrations/``; ``url`` overrides the database (otherwise settings
    decide).
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    for name, value in ALEMBIC_OPTIONS.items():
        config.set_main_option(name, value)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config
