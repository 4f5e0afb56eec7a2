"""``GET /metrics``: Prometheus text format, no key (scrape it from inside the cluster).

Labels name models (installed plugins, the same for every tenant), route templates, statuses and refusal causes,
never a tenant, a tenant's deployment or a key: anyone who can reach the port can read this page. With several
worker processes (``PROMETHEUS_MULTIPROC_DIR``) whichever worker answers reports the sum of all of them.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get

from cloudeasyml.services import Services

__all__ = ("MetricsController",)

_TEXT_FORMAT = "text/plain; version=0.0.4"  # what generate_latest writes; Litestar adds "; charset=utf-8" itself


class MetricsController(Controller):
    """The server's metrics."""

    path = "/metrics"
    tags = ["Health"]

    @get("/", summary="Prometheus metrics", include_in_schema=True, media_type=_TEXT_FORMAT)
    async def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Request latency by route and status; queue wait, batch size and inference time by model; predictions,
        items, processing time and billed cost by model; refusals by cause; errors by status; loaded deployments and
        sessions, their estimated memory, queued items, unwritten usage records.
        """
        services: Services = request.app.state.services
        services.refresh_gauges()
        return Response(services.metrics.render(), media_type=_TEXT_FORMAT)
