"""Packaging that ``pyproject.toml`` cannot declare: the Alembic environment ships inside the wheel.

The repository keeps ``migrations/`` at its root (``alembic`` commands work from there, next to ``alembic.ini``). The
wheel carries that directory as the package ``cloudeasyml.migrations`` through ``package_dir``, so the tree needs no
link (a Windows checkout has none) and an installed platform migrates its database with no checkout at hand;
``cloudeasyml/migrations_path.py`` finds either copy and builds the Alembic config in code (no ``alembic.ini`` in
the wheel). Everything else about the distribution is in ``pyproject.toml``.
"""

from __future__ import annotations

from setuptools import find_namespace_packages, setup

MIGRATIONS = {"cloudeasyml.migrations": "migrations", "cloudeasyml.migrations.versions": "migrations/versions"}
"""Packages of the wheel that live outside ``cloudeasyml/`` in the repository, and where."""

# Discovered, not listed, so that a new subpackage cannot be left out of the wheel by accident.
PACKAGES = find_namespace_packages(include=["cloudeasyml", "cloudeasyml.*"], exclude=["*.__pycache__"])

setup(
    packages=list(dict.fromkeys([*PACKAGES, *MIGRATIONS])),
    package_dir=MIGRATIONS,
    package_data={
        "cloudeasyml": ["plugins/scaffold/*.tmpl", "api/console/static/*"],
        "cloudeasyml.migrations": ["script.py.mako"],
    },
)
