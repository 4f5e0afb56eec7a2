"""Every hook is declared with a docstring, documented in docs/plugins.md, and has a test (datasette's habit)."""

from __future__ import annotations

import inspect
from pathlib import Path

from cloudeasyml.plugins import hookspecs

ROOT = Path(__file__).resolve().parents[2]


def hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("cloudeasyml_")]


def test_there_are_hooks() -> None:
    assert {"cloudeasyml_register_models", "cloudeasyml_authenticate", "cloudeasyml_adjust_pricing"} <= set(
        hook_names()
    )


def test_every_hook_has_a_docstring_where_it_is_declared() -> None:
    for name in hook_names():
        assert len(inspect.getdoc(getattr(hookspecs, name)) or "") > 80, name


def test_every_hook_is_documented_with_its_signature() -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name in hook_names():
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"## {name}({params})" in docs, name


def test_every_hook_has_a_test() -> None:
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    for name in hook_names():
        assert f"def test_hook_{name}" in tests, name
