"""Broken plugins never take the server down: they are left out and reported."""

from __future__ import annotations

import types

from cloudeasyml import hookimpl
from cloudeasyml.plugins.catalog import build_catalog
from cloudeasyml.plugins.manager import get_plugin_manager
from tests.support import tiny_model


def plugin(name: str, register_body) -> types.ModuleType:  # type: ignore[no-untyped-def]
    module = types.ModuleType(name)

    @hookimpl
    def cloudeasyml_register_models(register):  # type: ignore[no-untyped-def]
        register_body(register)

    module.cloudeasyml_register_models = cloudeasyml_register_models  # type: ignore[attr-defined]
    return module


class BadName(tiny_model.TinyModel):
    name = "Bad Name"


class NoExamples(tiny_model.TinyModel):
    name = "empty"

    def example_inputs(self):  # type: ignore[no-untyped-def]
        return []


def test_invalid_and_duplicate_models_are_left_out_with_reasons() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    pm.register(plugin("copycat", lambda register: register(tiny_model.TinyModel())), name="copycat")
    pm.register(plugin("badname", lambda register: register(BadName())), name="badname")
    pm.register(plugin("noexamples", lambda register: register(NoExamples())), name="noexamples")
    pm.register(plugin("notamodel", lambda register: register(object())), name="notamodel")
    pm.register(plugin("raiser", lambda register: 1 / 0), name="raiser")
    catalog = build_catalog(pm)
    assert len(catalog) == 0  # "tiny" is claimed twice, so neither claimant is served
    reasons = {f.plugin: f.error for f in catalog.failures}
    assert "claimed by several plugins" in reasons["tiny"] and "claimed by several plugins" in reasons["copycat"]
    assert "must match" in reasons["badname"]
    assert "example_inputs() returned nothing" in reasons["noexamples"]
    assert "not a ModelPlugin" in reasons["notamodel"]
    assert "ZeroDivisionError" in reasons["raiser"]


def test_valid_models_are_served_next_to_broken_ones() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(tiny_model, name="tiny")
    pm.register(plugin("raiser", lambda register: 1 / 0), name="raiser")
    catalog = build_catalog(pm)
    assert [e.model.name for e in catalog] == ["tiny"]
    assert catalog.get("tiny").source == tiny_model.__name__
    assert [f.plugin for f in catalog.failures] == ["raiser"]


def install_plugin(tmp_path, monkeypatch, name: str, entry_point: str, module_source: str) -> None:  # type: ignore[no-untyped-def]
    """A real installed distribution (dist-info on sys.path) with one `cloudeasyml` entry point."""
    module = f"{name}_module"
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[cloudeasyml]\n{entry_point} = {module}\n")
    (tmp_path / f"{module}.py").write_text(module_source)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_plugin_whose_import_fails_is_reported(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    install_plugin(
        tmp_path, monkeypatch, "broken_plugin", "broken", "raise ImportError('needs a library that is not here')\n"
    )
    pm = get_plugin_manager()
    failure = next(f for f in pm.load_failures if f.plugin == "broken")
    assert failure.source == "broken-plugin 0.1" and "needs a library" in failure.error
    assert "broken" not in {e.plugin for e in build_catalog(pm)}


def test_blocked_plugins_are_not_loaded(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    install_plugin(tmp_path, monkeypatch, "blocked_plugin", "blockme", "raise RuntimeError('must not be imported')\n")
    pm = get_plugin_manager(blocked=["blockme"])
    assert all(f.plugin != "blockme" for f in pm.load_failures)
