"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from litestar import Controller, Request, Response, get
from sqlalchemy import text

from cloudeasyml.api.problems import problem
from cloudeasyml.api.schemas import Health
from cloudeasyml.db.types import utc_now
from cloudeasyml.migrations_path import alembic_config
from cloudeasyml.services import Services

__all__ = ("HealthController",)


def _expected_heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


class HealthController(Controller):
    """``/health`` answers while the process runs; ``/health/ready`` only when it can serve."""

    path = "/health"
    tags = ["Health"]

    @get("/", summary="Liveness", exclude_from_auth=True)
    async def live(self, request: Request[Any, Any, Any]) -> Health:
        """The process is up."""
        services: Services = request.app.state.services
        return Health(
            status="healthy",
            timestamp=utc_now(),
            models_loaded=len(services.registry),
            models_installed=len(services.catalog),
        )

    @get("/ready", summary="Readiness", exclude_from_auth=True)
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Ready only when the database answers and its schema is at the migrations' head."""
        services: Services = request.app.state.services
        try:
            async with services.sessions() as session:
                await session.execute(text("SELECT 1"))
                rows = await session.execute(text("SELECT version_num FROM alembic_version"))
                current = {row[0] for row in rows}
        except Exception as exc:  # any database failure means not ready; say which, briefly
            return problem(request, 503, f"database not ready: {type(exc).__name__}")
        expected = _expected_heads()
        if current != expected:
            return problem(
                request,
                503,
                f"database schema is at {sorted(current) or 'nothing'}, expected {sorted(expected)}: "
                "run `cloudeasyml db upgrade`",
            )
        return Response({"status": "ready", "timestamp": utc_now().isoformat(), "schema": sorted(current)})
