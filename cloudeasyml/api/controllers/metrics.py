"""``GET /metrics``: Prometheus text format, no key (scrape it from inside the cluster).

Labels name models (installed plugins, the same for every tenant) and statuses, never a tenant, a tenant's
deployment or a key: anyone who can reach the port can read this page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Controller, Request, Response, get

from cloudeasyml.metering.metrics import render
from cloudeasyml.services import Services

__all__ = ("MetricsController",)

_TEXT_FORMAT = "text/plain; version=0.0.4"


def _by_model(values: Mapping[str, float]) -> dict[tuple[tuple[str, str], ...], float]:
    return {(("model", model),): value for model, value in sorted(values.items())}


class MetricsController(Controller):
    """Counters and gauges of this process."""

    path = "/metrics"
    tags = ["Health"]

    @get("/", summary="Prometheus metrics", exclude_from_auth=True, include_in_schema=True, media_type=_TEXT_FORMAT)
    async def metrics(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Predictions, items and processing time by model; errors by status; loaded deployments, queued items,
        unwritten usage records.
        """
        services: Services = request.app.state.services
        counters = services.metrics
        # By model only: /metrics answers without a key, so no label may name a tenant or a tenant's deployment.
        queued_by_model: dict[str, float] = {}
        for loaded in services.registry.loaded():
            model = loaded.spec.model_name
            queued_by_model[model] = queued_by_model.get(model, 0) + loaded.batcher.queued_items
        text = render(
            [
                ("cloudeasyml_predictions_total", "counter", "Billed requests.", _by_model(counters.predictions)),
                (
                    "cloudeasyml_prediction_items_total",
                    "counter",
                    "Items in billed requests.",
                    _by_model(counters.items),
                ),
                (
                    "cloudeasyml_processing_seconds_total",
                    "counter",
                    "Billed model processing time.",
                    _by_model(counters.processing_seconds),
                ),
                (
                    "cloudeasyml_http_errors_total",
                    "counter",
                    "Requests answered with an error status.",
                    {(("status", str(status)),): count for status, count in sorted(counters.errors.items())},
                ),
                (
                    "cloudeasyml_deployments_loaded",
                    "gauge",
                    "Deployments loaded in this process.",
                    {(): len(services.registry)},
                ),
                (
                    "cloudeasyml_session_bytes",
                    "gauge",
                    "Estimated memory of open onnxruntime sessions.",
                    {(): services.registry.session_bytes},
                ),
                (
                    "cloudeasyml_queue_items",
                    "gauge",
                    "Items waiting for a batch, by model.",
                    _by_model(queued_by_model),
                ),
                (
                    "cloudeasyml_usage_records_pending",
                    "gauge",
                    "Usage records not yet written.",
                    {(): services.meter.pending},
                ),
                ("cloudeasyml_models_installed", "gauge", "Installed, valid models.", {(): len(services.catalog)}),
            ]
        )
        return Response(text, media_type=_TEXT_FORMAT)  # Litestar adds "; charset=utf-8" to text/ types
