"""The platform as users get it: a built wheel, installed outside the checkout, migrates a database and reports
ready with its own ``migrations/`` (the package ``cloudeasyml.migrations``, not files of a checkout), from a source
tree that holds no symbolic link."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from cloudeasyml.api.console import ASSETS

REPO = Path(__file__).resolve().parents[2]

READY = """
import cloudeasyml, sys
from litestar.testing import TestClient
from cloudeasyml.app import create_app
assert "site-packages" in cloudeasyml.__file__, cloudeasyml.__file__
with TestClient(create_app()) as client:
    answer = client.get("/health/ready")
    page = client.get("/console/console.js")
assert page.status_code == 200 and b"sessionStorage" in page.content, page.status_code
print(answer.status_code, answer.json()["status"])
"""


def test_a_wheel_installed_elsewhere_migrates_and_is_ready(tmp_path: Path) -> None:
    run = {"check": True, "capture_output": True, "text": True}
    # Built from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info into the source tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("cloudeasyml", "migrations"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    links = [path for path in source.rglob("*") if path.is_symlink()]
    assert not links, f"a Windows checkout has no symbolic links: {links}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", tmp_path], **run
    )
    wheel = next(tmp_path.glob("cloudeasyml-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = {f"cloudeasyml/migrations/versions/{p.name}" for p in (REPO / "migrations" / "versions").glob("*.py")}
    assert {"cloudeasyml/migrations/env.py", "cloudeasyml/migrations/script.py.mako", *versions} <= names
    # The web console's files: every asset the app serves under /console.
    console = {f"cloudeasyml/api/console/static/{name}" for name in ASSETS}
    assert console <= names, console - names
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], **run).stdout.strip())
    # The dependencies come from this environment's site-packages as a plain path entry: its .pth files (among them
    # the editable install's, which maps cloudeasyml to the checkout) are not run there.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", site, wheel], **run)
    # Nor PYTHONPATH: a developer's shell may point it at the checkout, which would then be imported instead.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_") and k != "PYTHONPATH"}
    env["CLOUDEASYML_HOME"] = str(tmp_path / "home")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cli = [python, "-c", "from cloudeasyml.cli.main import cli; cli()"]
    upgraded = subprocess.run([*cli, "db", "upgrade"], cwd=outside, env=env, **run)
    assert "database at head" in upgraded.stdout
    ready = subprocess.run([python, "-c", READY], cwd=outside, env=env, **run)
    assert ready.stdout.split()[-2:] == ["200", "ready"], ready.stdout + ready.stderr
    # `cloudeasyml doctor` finds the wheel's own migration head (whatever else it reports about this bare venv).
    doctor = subprocess.run([*cli, "doctor", "--json"], cwd=outside, env=env, capture_output=True, text=True)
    statuses = {check["check"]: check["status"] for check in json.loads(doctor.stdout)["checks"]}
    assert statuses["database"] == statuses["migrations"] == "OK", doctor.stdout + doctor.stderr
    # The Python client ships in the same wheel.
    client = subprocess.run(
        [python, "-c", "import cloudeasyml.client as c; print(c.__file__)"], cwd=outside, env=env, **run
    )
    assert "site-packages" in client.stdout
