"""What a deployment's ``status`` says, and where each part of it lives.

A deployment is ``pending`` (made, not loaded in this process), ``loading`` (a load is under way in this process),
``ready`` (loaded in this process: a request runs without waiting for a load) or ``failed`` (the last load, in any
process, failed; ``statusReason`` says why, and the next request tries again). Loading is each process's own: with
``--workers N`` every worker loads a deployment on its first request there (an ``eagerLoad`` one when the worker
starts: ``cloudeasyml.domain.eager_warmup``), so ``loading`` and ``ready`` are the
answering process's view, derived from its registry and never stored. A failure must be visible whichever process
answers, so the last load's outcome is stored in the deployment's row (``status`` ``failed`` with
``status_reason``, back to ``pending`` once a load succeeds): ``LoadOutcomes`` writes it, once per load.
"""

from __future__ import annotations

import logging
import uuid
from typing import Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.db.models import Deployment
from cloudeasyml.errors import CloudEasyMLError
from cloudeasyml.runtime.registry import DeploymentSpec, ServingRegistry

__all__ = ("FAILED", "PENDING", "DeploymentStatus", "LoadOutcomes", "status_of")

log = logging.getLogger(__name__)

DeploymentStatus = Literal["pending", "loading", "ready", "failed"]
PENDING = "pending"
FAILED = "failed"
_MAX_REASON = 1000
"""The ``status_reason`` column's length."""


def status_of(row: Deployment, registry: ServingRegistry) -> tuple[DeploymentStatus, str | None]:
    """The deployment's status as this process sees it, and the reason of a failure."""
    if registry.get_loaded(row.id) is not None:
        return "ready", None
    if registry.is_loading(row.id):
        return "loading", None
    if row.status == FAILED:
        return "failed", row.status_reason
    return "pending", None


def _reason(exc: Exception) -> str:
    """What the tenant is told of a failed load: the platform's own words, never an internal error's (paths, ...)."""
    if isinstance(exc, CloudEasyMLError):
        return exc.detail[:_MAX_REASON]
    return f"the model could not be loaded ({type(exc).__name__}); the server's log has the details"


class LoadOutcomes:
    """Stores each load's outcome in the deployment's row (the registry's ``on_load``): ``failed`` and the reason, or
    back to ``pending`` after a failure. A database that cannot be written is logged, never raised: the load's own
    result (the model, or its error) is what the request gets.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __call__(self, spec: DeploymentSpec, error: Exception | None) -> None:
        """Record how the load of ``spec`` ended (``error`` None: it loaded)."""
        if error is None:
            await self._write(spec.id, PENDING, None, only_if_failed=True)
        else:
            log.warning("deployment %s (%s) failed to load: %r", spec.name, spec.id, error)
            await self._write(spec.id, FAILED, _reason(error))

    async def _write(
        self, deployment_id: uuid.UUID, status: str, reason: str | None, *, only_if_failed: bool = False
    ) -> None:
        statement = update(Deployment).where(Deployment.id == deployment_id)
        if only_if_failed:  # the usual case writes nothing (the UPDATE matches no row)
            statement = statement.where(Deployment.status == FAILED)
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(statement.values(status=status, status_reason=reason))
        except Exception:  # noqa: BLE001 - a status that cannot be stored must not change the request's outcome
            log.warning("could not store the load status of deployment %s", deployment_id, exc_info=True)
