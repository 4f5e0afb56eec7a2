"""`cloudeasyml plugins new` makes a package that installs with `pip install -e`, is found through its entry point,
shows up in GET /models, and passes its own test. It is installed into a throwaway venv layered over this one,
so this environment's entry points stay as they were."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from cloudeasyml.plugins.scaffold import scaffold_plugin

GET_MODELS = """
from litestar.testing import TestClient
from cloudeasyml.app import create_app
from cloudeasyml.settings import Settings, DatabaseSettings
app = create_app(Settings(database=DatabaseSettings(url="sqlite+aiosqlite:///{db}"), home="{home}"))
with TestClient(app) as client:
    print(client.app.state.services.catalog.get("acme_scores").source)
"""


def run(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(name="layered_venv", scope="module")
def fx_layered_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    # No pip or setuptools of its own: the base environment's (through the .pth) do the install.
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    purelib = Path(
        run(str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    # addsitedir (not a bare path) so the base environment's own .pth files, editable installs among them, apply.
    base = sysconfig.get_paths()["purelib"]
    (purelib / "zz_base_env.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    return venv


def test_scaffolded_plugin_installs_registers_and_passes_its_test(tmp_path: Path, layered_venv: Path) -> None:
    root = scaffold_plugin("acme_scores", tmp_path)
    python = str(layered_venv / "bin" / "python")
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(root))
    listed = json.loads(run(python, "-m", "cloudeasyml.cli", "plugins", "list", "--json"))
    model = next(m for m in listed["models"] if m["model"] == "acme_scores")
    assert model["source"] == "cloudeasyml-acme-scores 0.1.0" and model["plugin"] == "acme_scores"
    source = run(python, "-c", GET_MODELS.format(db=tmp_path / "x.db", home=tmp_path))
    assert "cloudeasyml-acme-scores 0.1.0" in source
    run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests"), cwd=root)


def test_scaffold_refuses_bad_names_and_existing_directories(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        scaffold_plugin("Bad-Name", tmp_path)
    scaffold_plugin("fine", tmp_path)
    with pytest.raises(FileExistsError):
        scaffold_plugin("fine", tmp_path)
