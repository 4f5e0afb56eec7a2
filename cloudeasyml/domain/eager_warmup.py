"""``eagerLoad`` deployments loaded when a process starts, before it reports ready.

``eagerLoad`` loads a deployment where it is made (and a new revision before its switch); without this, a process
started later (a restart, a new replica, a worker of ``--workers N``) loaded it only on its first request, which then
waited for the load (seen: 0.8 s for the tiny test model on a busy CI machine). Triton and
KServe load their models at startup and report ready after; so does this.

At start (in the lifespan's startup, one query) the process reads every deployment of every tenant that is not
suspended (a process-wide chore, as the batch workers' claims are: no caller, so no principal); then a background
pass loads and warms each ``eagerLoad`` one whose model is installed through ``Rollout.prepare`` (every route of a
traffic split, within its tenant's plan's cap of loaded units). A deployment that fails to load is logged and the
pass goes on. ``/health/ready`` answers 503 while the pass runs (``pending``), so that a load balancer sends nothing
to a replica still loading; with no ``eagerLoad`` deployment there is no pass, and the process is ready at once.
``CLOUDEASYML_RUNTIME__EAGER_LOAD_ON_START=false`` turns it off.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.background import cancel_and_wait
from cloudeasyml.db.models import Deployment, Tenant
from cloudeasyml.domain.deployments import to_spec
from cloudeasyml.domain.rollout import Rollout
from cloudeasyml.plugins.catalog import ModelCatalog
from cloudeasyml.runtime.registry import DeploymentSpec

__all__ = ("EagerWarmup",)

log = logging.getLogger(__name__)


class EagerWarmup:
    """Loads the ``eagerLoad`` deployments once, in the background, when the process starts."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rollout: Rollout,
        catalog: ModelCatalog,
        *,
        enabled: bool = True,
    ) -> None:
        self._sessions = sessions
        self._rollout = rollout
        self._catalog = catalog
        self._enabled = enabled
        self._task: asyncio.Task[None] | None = None
        self.total = 0
        """``eagerLoad`` deployments found by the pass."""
        self.loaded = 0
        self.failed = 0

    @property
    def pending(self) -> bool:
        """Whether the pass has started and not ended (the process is not ready yet)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Find the ``eagerLoad`` deployments and start the pass that loads them (once; not when disabled). A
        database that does not answer is logged: each deployment then loads on its first request.
        """
        if not self._enabled or self._task is not None:
            return
        self.total = self.loaded = self.failed = 0
        try:
            eager = await self._eager_deployments()
        except Exception as exc:  # noqa: BLE001 - serve anyway; readiness reports the database itself
            log.warning("eagerLoad deployments were not loaded at start (%r); each loads on its first request", exc)
            return
        if eager:
            self.total = len(eager)
            log.info("loading %d eagerLoad deployment(s)", len(eager))
            self._task = asyncio.get_running_loop().create_task(self._run(eager), name="eager-warmup")

    async def stop(self) -> None:
        """Stop the pass if it still runs (a unit being loaded is unloaded by the registry's close); a later
        ``start`` (the app served again) makes a new pass.
        """
        if self._task is not None:
            await cancel_and_wait(self._task)
        self._task = None

    async def _run(self, eager: list[tuple[DeploymentSpec, str]]) -> None:
        for spec, plan in eager:
            try:
                await self._rollout.prepare(spec, plan=plan)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one deployment's failure must not keep the others unloaded
                self.failed += 1
                cause = exc.__cause__ or exc  # prepare's own message speaks of a new revision; this is a start
                log.warning("eagerLoad deployment %s (%s) did not load: %r", spec.name, spec.model_name, cause)
            else:
                self.loaded += 1

    async def _eager_deployments(self) -> list[tuple[DeploymentSpec, str]]:
        """Every ``eagerLoad`` deployment of a tenant that is not suspended, whose model is installed, with its
        tenant's plan; oldest first.
        """
        statement = (
            select(Deployment, Tenant.plan)
            .join(Tenant, Tenant.id == Deployment.tenant_id)
            .where(Tenant.suspended_at.is_(None))
            .order_by(Deployment.created_at)
        )
        eager = []
        async with self._sessions() as session:
            for row, plan in (await session.execute(statement)).all():
                spec = to_spec(row)
                if spec.config.eager_load and spec.model_name in self._catalog:
                    eager.append((spec, plan))
        return eager
