"""The import contracts in pyproject.toml (``[tool.importlinter]``) hold, and each one catches the wrong import it
is there for: a copy of the sources gets one bad import and the matching contract must break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SOURCES = sorted((ROOT / "plugin_packages").glob("cloudeasyml-*/src"))
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the sources under ``root`` (the platform and the bundled plugins found there)."""
    sources = [root, *(root / path.relative_to(ROOT) for path in PLUGIN_SOURCES)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(path) for path in sources)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
            "--no-cache",
            "--config",
            str(root / "pyproject.toml"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _broken(output: str) -> set[str]:
    """Names of the contracts the report calls broken (a long name wraps over two lines in the summary)."""
    flat = " ".join(output.split())
    return {contract["name"] for contract in CONTRACTS if f"{' '.join(contract['name'].split())} BROKEN" in flat}


def _contract(kind: str, words: str) -> str:
    """The one contract of ``kind`` whose name holds ``words``."""
    (name,) = [c["name"] for c in CONTRACTS if c["type"] == kind and words in c["name"]]
    return name


def test_the_import_contracts_hold() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


def test_every_top_level_module_is_named_by_the_third_party_contracts() -> None:
    # The layers contract is exhaustive; the forbidden contracts list their sources by hand, so a new top-level
    # package must be added to them too (only api and app may import litestar, only runtime onnxruntime).
    children = {
        path.stem if path.suffix == ".py" else path.name
        for path in (ROOT / "cloudeasyml").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    allowed = {"litestar": {"api", "app"}, "onnxruntime": {"runtime"}, "torch": set()}
    checked = set()
    for contract in CONTRACTS:
        if contract["type"] == "forbidden" and contract["forbidden_modules"][0] in allowed:
            sources = {module.removeprefix("cloudeasyml.") for module in contract["source_modules"]}
            assert sources == children - allowed[contract["forbidden_modules"][0]], contract["name"]
            checked.add(contract["forbidden_modules"][0])
    assert checked == set(allowed)


def test_the_client_contract_forbids_every_other_top_level_module() -> None:
    # The client must stay importable without the server: a new top-level package is forbidden to it too.
    children = {
        path.stem if path.suffix == ".py" else path.name
        for path in (ROOT / "cloudeasyml").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    (contract,) = [c for c in CONTRACTS if c["type"] == "forbidden" and c["source_modules"] == ["cloudeasyml.client"]]
    forbidden = {m.removeprefix("cloudeasyml.") for m in contract["forbidden_modules"] if m.startswith("cloudeasyml.")}
    assert forbidden == children - {"client"}


# (contract, {file under the copy's root: line appended to it}); each breaks that contract and no other.
WRONG_IMPORTS = [
    pytest.param(
        _contract("layers", "Layers"), {"cloudeasyml/core/clock.py": "import cloudeasyml.settings"}, id="core-up"
    ),
    pytest.param(
        _contract("layers", "Layers"), {"cloudeasyml/plugins/text.py": "import cloudeasyml.db.types"}, id="plugins-db"
    ),
    pytest.param(_contract("layers", "Layers"), {"cloudeasyml/unplaced.py": "import os"}, id="module-in-no-layer"),
    pytest.param(
        _contract("acyclic_siblings", "cycles"),
        {
            "cloudeasyml/core/digest.py": "import cloudeasyml.core.clock",
            "cloudeasyml/core/clock.py": "import cloudeasyml.core.digest",
        },
        id="cycle-inside-core",
    ),
    pytest.param(_contract("forbidden", "litestar"), {"cloudeasyml/domain/usage.py": "import litestar"}, id="litestar"),
    pytest.param(
        _contract("forbidden", "onnxruntime"), {"cloudeasyml/domain/usage.py": "import onnxruntime"}, id="onnxruntime"
    ),
    pytest.param(_contract("forbidden", "torch"), {"cloudeasyml/plugins/text.py": "import torch"}, id="torch"),
    pytest.param(
        _contract("protected", "runtime.export"),
        {"cloudeasyml/runtime/registry.py": "import cloudeasyml.runtime.export"},
        id="export-on-the-serving-path",
    ),
    pytest.param(
        _contract("forbidden", "database"),
        {"cloudeasyml/runtime/batcher.py": "import cloudeasyml.db.models"},
        id="runtime-db",
    ),
    pytest.param(
        _contract("forbidden", "Python client"),
        {"cloudeasyml/client/schemas.py": "import cloudeasyml.core.pricing"},
        id="client-imports-the-server",
    ),
    pytest.param(
        _contract("forbidden", "Python client"),
        {"cloudeasyml/client/calls.py": "import sqlalchemy"},
        id="client-imports-a-server-dependency",
    ),
    pytest.param(
        _contract("forbidden", "Bundled plugins"),
        {"plugin_packages/cloudeasyml-housing/src/cloudeasyml_housing/dataset.py": "import cloudeasyml.core"},
        id="plugin-private-name",
    ),
]


@pytest.mark.parametrize(("contract", "edits"), WRONG_IMPORTS)
def test_a_wrong_import_breaks_its_contract(tmp_path: Path, contract: str, edits: dict[str, str]) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.onnx", "*.npz", "*.csv")
    shutil.copytree(ROOT / "cloudeasyml", tmp_path / "cloudeasyml", ignore=ignore)
    for source in PLUGIN_SOURCES:
        shutil.copytree(source, tmp_path / source.relative_to(ROOT), ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path, line in edits.items():
        target = tmp_path / path
        target.write_text((target.read_text() if target.exists() else "") + f"\n{line}\n")

    result = _lint(tmp_path)

    assert result.returncode != 0, result.stdout
    assert _broken(result.stdout) == {contract}, result.stdout


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    # The contract checks the client's own imports; this checks what importing it loads at run time (the package's
    # __init__, the plugin authors' API, included): no web framework, database, model runtime or Redis.
    probe = (
        "import sys, cloudeasyml.client; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules}))); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('cloudeasyml.'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    roots, ours = (set(line.split()) for line in result.stdout.splitlines())
    assert not roots & {"litestar", "sqlalchemy", "alembic", "onnxruntime", "redis", "uvicorn", "torch", "asyncpg"}
    assert {m.split(".")[1] for m in ours} <= {"client", "core", "plugins"}
