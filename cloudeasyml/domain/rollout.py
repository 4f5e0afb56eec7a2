"""Warm-then-switch: a deployment's new revision is loaded and warmed before it takes traffic, then the old
revision's units drain (their in-flight requests finish) and unload.

The order, for one change (``PATCH``, rollback, promote, abort):

1. ``prepare``: each serving unit of the new revision (one per route, ``DeploymentSpec.for_route``) that is not
   loaded yet is loaded and runs the model's example inputs once through its batcher, when the deployment has a
   unit loaded in this process or is ``eagerLoad``; otherwise nothing loads (the first request will). A failure
   unloads what this step loaded and raises ``RolloutFailedError``: the caller stores no revision, and the old one
   goes on serving.
2. The caller stores the revision (``RevisionService.apply``) and commits.
3. ``switch``: the deployment directory's cache takes the new spec at once (requests looked up from now on route
   on it), units no route of the new revision uses are retired (a late request that still holds the old spec is
   turned back to the directory instead of loading them again) and unloaded, each after its in-flight requests
   finish. Other processes are told through Redis (``Services.deployment_changed``) and do the same from a fresh
   read of the database.
"""

from __future__ import annotations

import logging

from cloudeasyml.domain.deployment_directory import DeploymentDirectory
from cloudeasyml.errors import CloudEasyMLError, RolloutFailedError
from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.runtime.registry import DeploymentSpec, ServingRegistry, UnitKey
from cloudeasyml.settings import LimitsSettings

__all__ = ("Rollout", "units_of")

log = logging.getLogger(__name__)


def units_of(spec: DeploymentSpec) -> dict[UnitKey, DeploymentSpec]:
    """The serving units a deployment's traffic uses (live and shadow), each with its route's spec."""
    routes = [spec.for_route(route) for route in spec.traffic]
    return {route.unit: route for route in routes}


class Rollout:
    """Moves one process's serving of a deployment from one revision to the next (see the module's docstring)."""

    def __init__(
        self,
        registry: ServingRegistry,
        directory: DeploymentDirectory,
        catalog: ModelCatalog,
        limits: LimitsSettings | None = None,
    ) -> None:
        self._registry = registry
        self._directory = directory
        self._catalog = catalog
        self._limits = limits if limits is not None else LimitsSettings()

    async def prepare(self, new: DeploymentSpec, *, plan: str) -> list[UnitKey]:
        """Load and warm the new revision's units that are not loaded, when the deployment is loaded here or
        eager; returns the units this loaded (for ``discard`` if the revision is then not stored).

        Raises:
            RolloutFailedError: A unit failed to load or to run the example inputs (what loaded is unloaded).
        """
        if not self._registry.units_of(new.id) and not new.config.eager_load:
            return []
        model = self._catalog.get(new.model_name).model
        cap = self._limits.for_plan(plan).max_loaded_deployments
        loaded_here: list[UnitKey] = []
        try:
            for unit, spec in units_of(new).items():
                self._registry.revive(unit)  # a rollback may bring back a unit retired by an earlier switch
                if self._registry.get_loaded(unit) is not None:
                    continue
                loaded = await self._registry.load(spec, model, tenant_cap=cap)
                loaded_here.append(unit)
                # Warm: the model's example inputs through the unit's batcher, as a request would run.
                await loaded.predict(list(model.example_inputs()))
        except Exception as exc:
            await self.discard(loaded_here)
            detail = exc.detail if isinstance(exc, CloudEasyMLError) else f"{type(exc).__name__}: {exc}"
            raise RolloutFailedError(
                f"the new revision of deployment {new.name!r} did not load ({detail}); no revision was made and "
                f"the deployment goes on serving as before"
            ) from exc
        return loaded_here

    async def discard(self, units: list[UnitKey]) -> None:
        """Unload units ``prepare`` loaded for a revision that was not stored."""
        for unit in units:
            await self._registry.unload_unit(unit)

    async def switch(self, new: DeploymentSpec) -> None:
        """Serve ``new`` from now on in this process: the directory's cache takes it, and the deployment's units
        that ``new`` does not use are retired, drained and unloaded.
        """
        self._directory.remember(new)
        await self.retire_unused(new)

    async def retire_unused(self, new: DeploymentSpec) -> None:
        """Drain and unload the deployment's loaded units that no route of ``new`` uses."""
        wanted = units_of(new)
        for loaded in self._registry.units_of(new.id):
            if loaded.unit not in wanted:
                log.info(
                    "deployment %s: revision %d no longer serves %s (%s); draining it",
                    new.name,
                    new.revision,
                    loaded.spec.model_version,
                    loaded.spec.config.variant,
                )
                self._registry.retire(loaded.unit)
                await self._registry.unload_unit(loaded.unit)
