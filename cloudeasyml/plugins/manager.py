"""Discovering plugins through the ``cloudeasyml`` entry-point group, one failure at a time."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points

import msgspec
import pluggy

from cloudeasyml.plugins import hookspecs

__all__ = ("LoadFailure", "PluginManager", "get_plugin_manager")

log = logging.getLogger(__name__)


class LoadFailure(msgspec.Struct, frozen=True):
    """A plugin (or one of its models) that could not be loaded, and why."""

    plugin: str
    source: str
    error: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus where each plugin came from and which ones failed to import."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.load_failures: list[LoadFailure] = []
        self._sources: dict[str, str] = {}

    def load_entry_points(self) -> None:
        """Import and register each entry point of the group. A plugin whose import fails is logged and
        remembered in ``load_failures`` instead of taking the process down (pluggy's own
        ``load_setuptools_entrypoints`` would raise).
        """
        for entry_point in entry_points(group=hookspecs.PROJECT):
            if self.is_blocked(entry_point.name) or self.get_plugin(entry_point.name) is not None:
                continue
            dist = entry_point.dist
            source = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
            try:
                self.register(entry_point.load(), name=entry_point.name)
            except Exception as exc:  # a broken plugin must never take the server down
                log.error("plugin %r (%s) failed to load: %s", entry_point.name, source, exc)
                self.load_failures.append(
                    LoadFailure(plugin=entry_point.name, source=source, error=f"{type(exc).__name__}: {exc}")
                )
            else:
                self._sources[entry_point.name] = source

    def source_of(self, plugin_name: str) -> str:
        """Where a registered plugin came from: ``distribution version`` for entry points, else its module."""
        if plugin_name in self._sources:
            return self._sources[plugin_name]
        plugin = self.get_plugin(plugin_name)
        return getattr(plugin, "__name__", repr(plugin))


def get_plugin_manager(*, load_entrypoints: bool = True, blocked: Iterable[str] = ()) -> PluginManager:
    """A plugin manager with CloudEasyML's hookspecs and, unless told not to, every installed plugin."""
    pm = PluginManager()
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_entry_points()
    pm.check_pending()
    return pm
