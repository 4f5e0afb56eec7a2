"""The hooks CloudEasyML calls on installed plugins. Every hook is documented here and in docs/plugins.md.

Hooks are synchronous and called at startup or per billing record, never awaited on the request path
(pluggy has no async hooks). Plugins implement them with ``@cloudeasyml.hookimpl``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from cloudeasyml.plugins.model import ModelPlugin

__all__ = ("PROJECT", "hookimpl", "hookspec")

PROJECT = "cloudeasyml"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

RegisterModel = Callable[["ModelPlugin"], None]


@hookspec
def cloudeasyml_register_models(register: RegisterModel) -> None:
    """Contribute model plugins.

    Call ``register(model)`` once per ``ModelPlugin`` instance; each model's ``name`` must be unique across
    installed plugins. Called once per process at startup: do not load weights or sessions here, the host
    loads lazily.

    Args:
        register: Accepts a ``ModelPlugin`` instance.
    """
