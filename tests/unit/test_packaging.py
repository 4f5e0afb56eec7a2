"""The Alembic environment without links: one config in code that matches the root ``alembic.ini``, and a tree that
a checkout without symbolic links (Windows) reproduces. The wheel itself: tests/integration/test_installed_wheel.py."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from cloudeasyml.migrations_path import ALEMBIC_OPTIONS, alembic_config, migrations_dir

REPO = Path(__file__).resolve().parents[2]


def test_the_config_in_code_matches_the_root_alembic_ini() -> None:
    ini = configparser.RawConfigParser()
    ini.read(REPO / "alembic.ini")
    options = dict(ini["alembic"])
    assert options.pop("script_location") == "%(here)s/migrations"
    options.pop("prepend_sys_path")  # lets `alembic` run from the root without an install; the package needs none
    assert options == ALEMBIC_OPTIONS


def test_the_checkout_migrates_from_its_root_migrations_directory() -> None:
    assert migrations_dir() == REPO / "migrations"
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    assert {script.path for script in scripts.walk_revisions()} == {
        str(path) for path in (REPO / "migrations" / "versions").glob("*.py")
    }


def test_no_tracked_file_is_a_symbolic_link() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[1] for line in listing.splitlines() if line.startswith("120000")] == []
