"""Predictions."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, post
from litestar.params import FromPath
from litestar.response.base import ASGIResponse
from litestar.status_codes import HTTP_200_OK

from cloudeasyml.api.auth import require
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("InferenceController",)

_PREDICT_DOC = """Body: ``{"deploymentId": "<uuid>", "inputs": [<input>, ...]}`` where each input follows the model's
``inputSchema`` (``GET /models/{name}``). Answers ``{"predictions": [...], "modelName", "modelVersion",
"deploymentId", "processingTimeMs", "requestId"}``; each successful request is billed once."""


class InferenceController(Controller):
    """``POST /predict`` and ``POST /deployments/{id}/predict`` (scope ``predict``). The body is decoded with
    the model's own types, so it is read raw here rather than through a generic schema.

    This is the hot path: the scope is checked inline (Litestar copies the handler for every guard call) and
    the encoded answer goes out as a raw ``ASGIResponse``.
    """

    tags = ["Inference"]

    @post("/predict", summary="Predict", description=_PREDICT_DOC, status_code=HTTP_200_OK)
    async def predict(self, request: Request[Principal, Any, Any]) -> ASGIResponse:
        """Run a deployment named in the body."""
        require(request.user, "predict")
        services: Services = request.app.state.services
        content = await services.inference.predict(request.user, await request.body())
        return ASGIResponse(body=content, media_type="application/json")

    @post(
        "/deployments/{deployment_id:uuid}/predict",
        summary="Predict with the deployment in the path",
        description=_PREDICT_DOC,
        status_code=HTTP_200_OK,
    )
    async def predict_deployment(
        self, request: Request[Principal, Any, Any], deployment_id: FromPath[uuid.UUID]
    ) -> ASGIResponse:
        """Run the deployment in the path (a ``deploymentId`` in the body is ignored)."""
        require(request.user, "predict")
        services: Services = request.app.state.services
        content = await services.inference.predict(request.user, await request.body(), deployment_id)
        return ASGIResponse(body=content, media_type="application/json")
