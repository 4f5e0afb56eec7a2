"""The hooks CloudEasyML calls on installed plugins. Every hook is documented here and in docs/plugins.md.

Hooks are synchronous (pluggy has no async hooks) and called at startup or once per cached key, never awaited on
the request path. Plugins implement them with ``@cloudeasyml.hookimpl``; ``docs/plugins.md`` is the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from cloudeasyml.core.pricing import Pricing
    from cloudeasyml.core.principal import Principal
    from cloudeasyml.plugins.model import ModelPlugin

__all__ = ("PROJECT", "RegisterModel", "hookimpl", "hookspec")

PROJECT = "cloudeasyml"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

RegisterModel = Callable[["ModelPlugin"], None]
"""The ``register`` callback ``cloudeasyml_register_models`` receives (public as ``cloudeasyml.RegisterModel``)."""


@hookspec
def cloudeasyml_register_models(register: RegisterModel) -> None:
    """Contribute model plugins.

    Call ``register(model)`` once per ``ModelPlugin`` instance; each model's ``name`` must be unique across
    installed plugins. Called once per process at startup: do not load weights or sessions here, the host
    loads lazily.

    Args:
        register: Accepts a ``ModelPlugin`` instance.
    """


@hookspec(firstresult=True)
def cloudeasyml_authenticate(token: str) -> Principal | None:
    """Authenticate a bearer token that is not a CloudEasyML API key (a JWT from your identity provider, say).

    Called only for tokens not shaped like ``sk_<16>.<secret>``; the first plugin returning a
    ``Principal`` wins. Return None for tokens you do not recognise, and raise
    ``cloudeasyml.errors.AuthenticationError`` for tokens you recognise but reject (bad signature,
    expired). Called on the request path for such tokens: keep it fast and synchronous (verify locally,
    cache keys; never block on the network per request). The host caches each token's answer (by its digest)
    for ``server.key_cache_seconds``, so a token is asked about at most once per period and process.

    Args:
        token: The bearer token as sent.

    Returns:
        The caller's tenant, scopes and identity, or None.
    """


@hookspec(firstresult=True)
def cloudeasyml_adjust_pricing(model: ModelPlugin, plan: str, pricing: Pricing) -> Pricing | None:
    """Change what a tenant's plan pays for a model (a tier discount, a surcharge for GPU models, ...).

    Called once per (plan, model, version) and cached for the life of the process, never per request.
    The first plugin returning a ``Pricing`` wins; return None to leave ``pricing`` as it is.

    Args:
        model: The model being billed.
        plan: The tenant's plan name (``cloudeasyml tenants create --plan``).
        pricing: The model's default pricing.

    Returns:
        The pricing to bill with, or None.
    """
