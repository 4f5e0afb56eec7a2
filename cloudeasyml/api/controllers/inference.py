"""Predictions."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.status_codes import HTTP_200_OK

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("InferenceController",)

_PREDICT_DOC = """Body: ``{"deploymentId": "<uuid>", "inputs": [<input>, ...]}`` where each input follows the model's
``inputSchema`` (``GET /models/{name}``). Answers ``{"predictions": [...], "modelName", "modelVersion",
"deploymentId", "processingTimeMs", "requestId"}``; each successful request is billed once."""


class InferenceController(Controller):
    """``POST /predict`` and ``POST /deployments/{id}/predict``. The body is decoded with the model's own
    types, so it is read raw here rather than through a generic schema."""

    tags = ["Inference"]
    guards = [requires_scope("predict")]

    @post("/predict", summary="Predict", description=_PREDICT_DOC, status_code=HTTP_200_OK)
    async def predict(self, request: Request[Principal, Any, Any]) -> Response[bytes]:
        """Run a deployment named in the body."""
        services: Services = request.app.state.services
        content = await services.inference.predict(request.user, await request.body())
        return Response(content, media_type="application/json")

    @post(
        "/deployments/{deployment_id:uuid}/predict",
        summary="Predict with the deployment in the path",
        description=_PREDICT_DOC,
        status_code=HTTP_200_OK,
    )
    async def predict_deployment(self, request: Request[Principal, Any, Any], deployment_id: uuid.UUID) -> Response[bytes]:
        """Run the deployment in the path (a ``deploymentId`` in the body is ignored)."""
        services: Services = request.app.state.services
        content = await services.inference.predict(request.user, await request.body(), deployment_id)
        return Response(content, media_type="application/json")
