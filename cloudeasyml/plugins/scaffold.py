"""``cloudeasyml plugins new``: a working plugin package to start from."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from string import Template

import numpy as np

__all__ = ("PLUGIN_NAME", "scaffold_plugin")

PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")
"""A whole name (``fullmatch``: ``$`` would let a final newline through)."""

_FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/cloudeasyml_{name}/__init__.py",
    "model.py.tmpl": "src/cloudeasyml_{name}/model.py",
    "test_model.py.tmpl": "tests/test_cloudeasyml_{name}.py",
}


def scaffold_plugin(name: str, directory: Path) -> Path:
    """Write ``cloudeasyml-<name>/`` under ``directory`` and return it. Refuses to overwrite anything."""
    if not PLUGIN_NAME.fullmatch(name):
        raise ValueError(f"plugin name {name!r} must match {PLUGIN_NAME.pattern} (it becomes a Python module)")
    root = directory / f"cloudeasyml-{name.replace('_', '-')}"
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    values = {
        "name": name,
        "dist": name.replace("_", "-"),
        "cls": "".join(p.title() for p in name.split("_")),
        "title": name.replace("_", " ").title(),
    }
    templates = files("cloudeasyml.plugins") / "scaffold"
    for template, target in _FILES.items():
        path = root / target.format(name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template((templates / template).read_text()).substitute(values))
    # Starting weights: a fixed linear map, so the package serves before it is trained.
    weights = {"weight": np.array([[0.5, -0.25]], dtype=np.float32), "bias": np.array([1.0], dtype=np.float32)}
    # numpy's stub types **kwds as if one could be its allow_pickle flag (bool); these are arrays by name.
    np.savez(root / "src" / f"cloudeasyml_{name}" / "weights.npz", **weights)  # type: ignore[arg-type]
    return root
