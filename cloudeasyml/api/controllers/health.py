"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get

from cloudeasyml.api.problems import problem
from cloudeasyml.api.schemas import Health
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.errors import RETRY_AFTER_SECONDS
from cloudeasyml.db.readiness import expected_heads
from cloudeasyml.services import Services

__all__ = ("HealthController",)


class HealthController(Controller):
    """``/health`` answers while the process runs; ``/health/ready`` only when it can serve."""

    path = "/health"
    tags = ["Health"]

    @get("/", summary="Liveness")
    async def live(self, request: Request[Any, Any, Any]) -> Health:
        """The process is up."""
        services: Services = request.app.state.services
        return Health(
            status="healthy",
            timestamp=utc_now(),
            models_loaded=len(services.registry),
            models_installed=len(services.catalog),
        )

    @get("/ready", summary="Readiness")
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Ready only when the database answers, its schema is at the migrations' head, and the ``eagerLoad``
        deployments have loaded (``CLOUDEASYML_RUNTIME__EAGER_LOAD_ON_START``).
        """
        services: Services = request.app.state.services
        reason = await services.not_ready_reason()
        if reason is not None:
            return problem(request, 503, reason, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return Response({"status": "ready", "timestamp": utc_now().isoformat(), "schema": sorted(expected_heads())})
