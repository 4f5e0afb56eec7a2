"""Shadow copies: a shadow route gets a copy of a share of a deployment's live requests, run after the live answer.

The copy is an asyncio task started once the live request has run and been billed; it first yields to the event
loop, so the live handler sends its answer before the copy does any work, and nothing of the copy (its load, run,
failure) reaches the live request. It runs through ``InferenceService.execute`` like any request, with
``context.mode = "shadow"``, a fresh request id and ``context.shadow_of`` naming the live request, so what runs,
how it is billed and what is recorded of it is the data plane's one path.

Shadow traffic is shed first under load (each shed copy counts in ``cloudeasyml_shadow_copies_total{outcome="shed"}``):

- at most ``limits.max_shadow_in_flight`` copies run at once in a process (all tenants together);
- none starts while the live unit that answered, or the shadow unit, has more than
  ``limits.shadow_queue_fraction`` of its queue bound waiting;
- none loads its unit when the tenant's loaded units are at its cap (loading it would unload another of the
  tenant's units, maybe the live one);
- with ``bill_shadow``, none starts once the tenant's spend cap is reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.quota import QuotaGuard
from cloudeasyml.domain.request_context import RequestContext
from cloudeasyml.metering.metrics import Metrics
from cloudeasyml.runtime.registry import DeploymentSpec, LoadedDeployment, ServingRegistry
from cloudeasyml.settings import LimitsSettings

__all__ = ("ShadowRunner", "queue_above")

log = logging.getLogger(__name__)

Execute = Callable[[Principal, DeploymentSpec, RequestContext], Awaitable[object]]
"""Runs one copy through the data plane (``InferenceService.execute`` with the live request's entry and run)."""


def queue_above(loaded: LoadedDeployment, fraction: float) -> bool:
    """Whether more than ``fraction`` of ``loaded``'s queue bound is waiting."""
    return loaded.batcher.queued_items > fraction * loaded.spec.config.max_queue_items


class ShadowRunner:
    """Starts, bounds and sheds the shadow copies of one process."""

    def __init__(self, registry: ServingRegistry, quota: QuotaGuard, metrics: Metrics, limits: LimitsSettings) -> None:
        self._registry = registry
        self._quota = quota
        self._metrics = metrics
        self._limits = limits
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Copies started and not finished."""
        return len(self._tasks)

    def copy(
        self,
        principal: Principal,
        copies: list[DeploymentSpec],
        live: LoadedDeployment,
        live_context: RequestContext,
        execute: Execute,
    ) -> None:
        """Start a copy of the live request (``live_context``, answered by ``live``) on each of ``copies``, or shed
        it. Never raises and never waits.
        """
        limits = self._limits
        for spec in copies:
            if len(self._tasks) >= limits.max_shadow_in_flight or queue_above(live, limits.shadow_queue_fraction):
                self._metrics.record_shadow("shed")
                continue
            context = RequestContext()
            context.mode = "shadow"
            context.shadow_of = live_context.request_id
            task = asyncio.get_running_loop().create_task(self._run(principal, spec, context, execute))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, principal: Principal, spec: DeploymentSpec, context: RequestContext, execute: Execute) -> None:
        await asyncio.sleep(0)  # the live handler sends its answer first
        try:
            if not await self._may_run(principal, spec):
                self._metrics.record_shadow("shed")
                return
            await execute(principal, spec, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is counted, never the live request's
            self._metrics.record_shadow("failed")
            log.debug("shadow copy %s of %s on %s failed: %r", context.request_id, context.shadow_of, spec.name, exc)
        else:
            self._metrics.record_shadow("run")

    async def _may_run(self, principal: Principal, spec: DeploymentSpec) -> bool:
        limits = self._limits
        loaded = self._registry.get_loaded(spec)
        if loaded is not None:
            if queue_above(loaded, limits.shadow_queue_fraction):
                return False
        else:
            cap = limits.for_plan(principal.plan).max_loaded_deployments
            held = sum(1 for unit in self._registry.loaded() if unit.spec.tenant_id == principal.tenant_id)
            if cap and held >= cap:
                return False
        if limits.for_plan(principal.plan).bill_shadow:
            return await self._quota.shadow_allowed(principal.tenant_id)
        return True

    async def close(self) -> None:
        """Cancel the copies still running (at shutdown: a copy is never worth waiting for)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
