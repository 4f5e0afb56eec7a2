"""Predictions: ``POST /predict`` and ``POST /deployments/{id}/predict`` (scope ``predict``).

``POST /predict`` is the platform's hot path, so it is a Litestar ASGI route handler rather than a ``@post``
handler. Routing, the API-key middleware and the problem-details exception handlers apply to it as to every
route, but no ``Request``, parameter model or ``Response`` is built per call: that machinery cost about 60 µs
of event-loop CPU per request, a third of the server's share when the model is fast or runs off the loop. The
body is read raw (the model's own types decode it), the scope is checked inline and the encoded answer is sent
as is. Litestar documents only ``@post``-style handlers, so ``cloudeasyml.api.prediction_docs`` adds the
OpenAPI operations of both endpoints.

``POST /deployments/{id}/predict`` stays a ``@post`` handler: Litestar 2.25 cannot route an HTTP request to an
ASGI handler whose path has parameters (its router looks the parameters up by the request method, which ASGI
nodes do not record, and fails with a ``KeyError``).
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, asgi, post
from litestar.exceptions import MethodNotAllowedException
from litestar.params import FromPath
from litestar.response.base import ASGIResponse
from litestar.status_codes import HTTP_200_OK
from litestar.types import HTTPScope, Receive, Scope, Send

from cloudeasyml.api.auth import require
from cloudeasyml.api.raw_http import read_body, send_json
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("PREDICTION_ROUTES", "predict", "predict_deployment")


async def _predict(scope: HTTPScope, receive: Receive, send: Send, deployment_id: uuid.UUID | None) -> None:
    if scope["method"] != "POST":
        raise MethodNotAllowedException(headers={"Allow": "POST"})
    principal = scope["user"]
    require(principal, "predict")
    services: Services = scope["litestar_app"].state.services
    body = await read_body(scope, receive, services.settings.server.max_body_bytes)
    await send_json(send, await services.inference.predict(principal, body, deployment_id))


@asgi("/predict", name="predict", copy_scope=False)
async def predict(scope: Scope, receive: Receive, send: Send) -> None:
    """Run the deployment named by ``deploymentId`` in the body."""
    await _predict(scope, receive, send, None)  # type: ignore[arg-type]


@post("/deployments/{deployment_id:uuid}/predict", name="predict-deployment", status_code=HTTP_200_OK)
async def predict_deployment(request: Request[Principal, Any, Any], deployment_id: FromPath[uuid.UUID]) -> ASGIResponse:
    """Run the deployment in the path (a ``deploymentId`` in the body is ignored)."""
    require(request.user, "predict")
    services: Services = request.app.state.services
    content = await services.inference.predict(request.user, await request.body(), deployment_id)
    return ASGIResponse(body=content, media_type="application/json")


PREDICTION_ROUTES = (predict, predict_deployment)
