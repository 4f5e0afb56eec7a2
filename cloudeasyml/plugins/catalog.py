"""The installed models: collected from every plugin's ``cloudeasyml_register_models``, each one validated."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from cloudeasyml.core.pricing import Pricing
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.tensors import TensorSpec
from cloudeasyml.errors import ModelNotFoundError
from cloudeasyml.plugins.manager import LoadFailure, PluginManager
from cloudeasyml.plugins.model import ModelPlugin

__all__ = ("CatalogEntry", "ModelCatalog", "build_catalog")

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
"""A whole name (``fullmatch``: ``$`` would let a final newline through)."""
MAX_INPUTS_PER_REQUEST = 4096
"""The ceiling on a model's ``max_items_per_request`` (the most items a deployment's queue takes by default)."""


class CatalogEntry(msgspec.Struct, frozen=True):
    """One servable model, where it came from, and its request decoder."""

    model: ModelPlugin
    plugin: str
    source: str
    inputs_type: Any
    """``list[model.input_type]`` with length bounds: the type of a predict request's ``inputs``."""


class ModelCatalog:
    """Models by name, plus the plugins and models that were refused (and why)."""

    def __init__(self, entries: dict[str, CatalogEntry], failures: list[LoadFailure]) -> None:
        self._entries = entries
        self.failures = failures

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.model.name))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> CatalogEntry:
        """The model called ``name``, or ``ModelNotFoundError``."""
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFoundError(f"no installed model is named {name!r}")
        return entry


def _positive_int(value: object, ceiling: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= ceiling


def _check(model: object) -> str | None:
    """Why ``model`` cannot be served, or None when it can."""
    if not isinstance(model, ModelPlugin):
        return f"registered {type(model).__name__}, not a ModelPlugin instance"
    name = getattr(model, "name", None)
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        return f"model name {name!r} must match {MODEL_NAME.pattern}"
    checks: list[tuple[bool, str]] = [
        (isinstance(getattr(model, "version", None), str) and bool(model.version), "version must be a non-empty str"),
        (hasattr(model, "input_type") and hasattr(model, "output_type"), "input_type and output_type are required"),
        (_tensors_ok(getattr(model, "input_tensors", None)), "input_tensors must be a non-empty tuple of TensorSpec"),
        (_tensors_ok(getattr(model, "output_tensors", None)), "output_tensors must be a non-empty tuple of TensorSpec"),
        (isinstance(model.pricing, Pricing), "pricing must be a cloudeasyml.Pricing"),
        (isinstance(model.serving, ServingConfig), "serving must be a cloudeasyml.ServingConfig"),
        (
            _positive_int(model.max_items_per_request, MAX_INPUTS_PER_REQUEST)
            and _positive_int(model.max_batch_items, MAX_INPUTS_PER_REQUEST),
            f"max_items_per_request and max_batch_items must be ints from 1 to {MAX_INPUTS_PER_REQUEST}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            return message
    try:
        msgspec.json.schema(model.input_type)
        msgspec.json.schema(model.output_type)
        examples = model.example_inputs()
        if not examples:
            return "example_inputs() returned nothing"
        for example in examples:
            msgspec.convert(msgspec.to_builtins(example), model.input_type)
    except Exception as exc:  # plugin code: any failure means the model is unusable
        return f"invalid metadata: {type(exc).__name__}: {exc}"
    return None


def _tensors_ok(tensors: object) -> bool:
    return isinstance(tensors, tuple) and bool(tensors) and all(isinstance(t, TensorSpec) for t in tensors)


def _append_claim(registered: list[tuple[str, object]], plugin: str, model: object) -> None:
    registered.append((plugin, model))


def _collect(pm: PluginManager) -> tuple[list[tuple[str, object]], list[LoadFailure]]:
    """Call each plugin's hook separately so a failure is charged to the plugin that raised it."""
    registered: list[tuple[str, object]] = []
    failures: list[LoadFailure] = []
    for impl in pm.hook.cloudeasyml_register_models.get_hookimpls():
        try:
            impl.function(register=functools.partial(_append_claim, registered, impl.plugin_name))
        except Exception as exc:  # plugin code
            failures.append(
                LoadFailure(impl.plugin_name, pm.source_of(impl.plugin_name), f"{type(exc).__name__}: {exc}")
            )
    return registered, failures


def build_catalog(pm: PluginManager) -> ModelCatalog:
    """Validate every registered model. Invalid ones, and every claimant of a name claimed twice, are left
    out and reported; nothing a plugin does here can stop the server from starting.
    """
    registered, failures = _collect(pm)
    failures = list(pm.load_failures) + failures
    claims: dict[str, list[str]] = {}
    for plugin, model in registered:
        claims.setdefault(getattr(model, "name", "?"), []).append(plugin)
    entries: dict[str, CatalogEntry] = {}
    for plugin, model in registered:
        source = pm.source_of(plugin)
        problem = _check(model)
        if problem is None and len(claims[model.name]) > 1:  # type: ignore[attr-defined]
            problem = f"model name {model.name!r} is claimed by several plugins: {', '.join(claims[model.name])}"  # type: ignore[attr-defined]
        if problem is not None:
            log.error("model from plugin %r (%s) left out: %s", plugin, source, problem)
            failures.append(LoadFailure(plugin=plugin, source=source, error=problem))
            continue
        assert isinstance(model, ModelPlugin)
        inputs_type = Annotated[
            list[model.input_type],  # type: ignore[name-defined]  # a type built at run time, from the plugin
            msgspec.Meta(min_length=1, max_length=model.max_items_per_request),
        ]
        entries[model.name] = CatalogEntry(model=model, plugin=plugin, source=source, inputs_type=inputs_type)
    return ModelCatalog(entries, failures)
