"""Events that no database change of a request causes, written in their own transaction in the background: a
deployment's model loaded or failed to (told by the serving registry), a tenant crossed a share of a monthly cap
(told by the quota guard).

Each is a fact several processes may observe, so its event id is derived from the fact: the outbox keeps the first
writer's event and drops the others' (``derived_event_id``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.domain.quota import QuotaCrossing
from cloudeasyml.domain.webhooks.events import deployment_data, derived_event_id, emit, rfc3339
from cloudeasyml.errors import NotFoundError
from cloudeasyml.runtime.registry import DeploymentSpec

__all__ = ("Notices",)

log = logging.getLogger(__name__)

_REMEMBERED = 100_000
"""Event ids this process wrote already and skips without a database round trip (a bound on memory)."""


class Notices:
    """Writes the events of facts observed outside a request's transaction (see the module's docstring)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, retry_window_seconds: float = 86400.0) -> None:
        self._sessions = sessions
        self._window = timedelta(seconds=retry_window_seconds)
        self._tasks: set[asyncio.Task[None]] = set()
        self._written: dict[str, None] = {}

    def deployment_loaded(self, spec: DeploymentSpec, error: BaseException | None) -> None:
        """The registry's load result: ``deployment.ready`` the first time a deployment's model loaded (in any
        process), ``deployment.failed`` the first time a load failed with a given error. A load stopped because
        the deployment was deleted is neither.
        """
        if isinstance(error, NotFoundError):
            return
        data = deployment_data(spec.id, spec.name, spec.model_name, spec.model_version)
        if error is None:
            self.submit(spec.tenant_id, "deployment.ready", data, derived_event_id("deployment.ready", spec.id))
            return
        message = str(error) or type(error).__name__
        data["error"] = message[:500]
        self.submit(spec.tenant_id, "deployment.failed", data, derived_event_id("deployment.failed", spec.id, message))

    def quota_crossed(self, crossing: QuotaCrossing) -> None:
        """``quota.warning`` (80 % of a cap) or ``quota.exceeded`` (the cap reached), once per tenant, cap and
        month.
        """
        month = f"{crossing.month_start:%Y-%m}"
        data = {
            "cap": crossing.cap,
            "limit": str(crossing.limit),
            "used": str(crossing.used),
            "month": month,
            "resetsAt": rfc3339(crossing.resets_at),
        }
        event_type = f"quota.{crossing.level}"
        event_id = derived_event_id(event_type, crossing.tenant_id, crossing.cap, month)
        self.submit(crossing.tenant_id, event_type, data, event_id)

    def submit(self, tenant_id: uuid.UUID, event_type: str, data: Mapping[str, Any], event_id: str) -> None:
        """Write the event in the background (this is called from synchronous code on the event loop)."""
        if event_id in self._written:
            return
        task = asyncio.get_running_loop().create_task(self._write(tenant_id, event_type, data, event_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, tenant_id: uuid.UUID, event_type: str, data: Mapping[str, Any], event_id: str) -> None:
        try:
            async with self._sessions.begin() as session:
                await emit(session, tenant_id, event_type, data, event_id=event_id, retry_window=self._window)
        except Exception as exc:  # noqa: BLE001 - a lost notice must not fail the load or the request behind it
            log.warning("writing the %s event of tenant %s failed: %s", event_type, tenant_id, exc)
            return
        if len(self._written) >= _REMEMBERED:
            del self._written[next(iter(self._written))]
        self._written[event_id] = None

    async def close(self) -> None:
        """Wait for the events still being written (those started on this loop: a load run on another loop, as a
        test may do, is that loop's to finish).
        """
        loop = asyncio.get_running_loop()
        tasks = [task for task in self._tasks if task.get_loop() is loop]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
