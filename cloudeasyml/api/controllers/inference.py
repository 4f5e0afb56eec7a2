"""Predictions: ``POST /predict`` and ``POST /deployments/{id}/predict`` (scope ``predict``).

``POST /predict`` is the platform's hot path. ``cloudeasyml.api.fast_path.PredictFastPath`` serves it ahead of
Litestar's router where the app's configuration allows, with ``prediction`` below; the route here answers what it
leaves to Litestar (other methods, a root path, any app where the fast path is off) and carries the OpenAPI
operation. The route is a Litestar ASGI route handler rather than a
``@post`` handler: no ``Request``, parameter model or ``Response`` is built per call (that machinery cost about
60 µs of event-loop CPU per request). The body is read raw (the model's own types decode it), the scope is
checked inline and the encoded answer is sent as is. Litestar documents only ``@post``-style handlers, so
``cloudeasyml.api.prediction_docs`` adds the OpenAPI operations of both endpoints.

``POST /deployments/{id}/predict`` stays a ``@post`` handler: Litestar 2.25 cannot route an HTTP request to an
ASGI handler whose path has parameters (its router looks the parameters up by the request method, which ASGI
nodes do not record, and fails with a ``KeyError``).
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from litestar import Request, asgi, post
from litestar.exceptions import MethodNotAllowedException
from litestar.params import FromPath
from litestar.response.base import ASGIResponse
from litestar.status_codes import HTTP_200_OK
from litestar.types import HTTPScope, Receive, Scope, Send

from cloudeasyml.api.auth import require
from cloudeasyml.api.raw_http import read_body, send_json
from cloudeasyml.api.request_log import request_context
from cloudeasyml.domain.principal import Principal
from cloudeasyml.services import Services

__all__ = ("PREDICTION_ROUTES", "predict", "predict_deployment", "prediction")


async def prediction(scope: HTTPScope, receive: Receive, deployment_id: uuid.UUID | None) -> bytes:
    """The encoded answer to the prediction request of ``scope`` (authenticated: its principal is in ``user``)."""
    principal = scope["user"]
    require(principal, "predict")
    services: Services = scope["litestar_app"].state.services
    body = await read_body(scope, receive, services.settings.server.max_body_bytes)
    return await services.inference.predict(principal, body, deployment_id, request_context(scope))


@asgi("/predict", name="predict", copy_scope=False)
async def predict(scope: Scope, receive: Receive, send: Send) -> None:
    """Run the deployment named by ``deploymentId`` in the body.

    The fast path (``cloudeasyml.api.fast_path``) serves ``POST /predict`` ahead of the router when it is on; this
    route answers the requests it leaves to Litestar and carries the endpoint's OpenAPI operation.
    """
    http = cast(HTTPScope, scope)  # the route is HTTP-only
    if http["method"] != "POST":
        raise MethodNotAllowedException(headers={"Allow": "POST"})
    await send_json(send, await prediction(http, receive, None))


@post("/deployments/{deployment_id:uuid}/predict", name="predict-deployment", status_code=HTTP_200_OK)
async def predict_deployment(request: Request[Principal, Any, Any], deployment_id: FromPath[uuid.UUID]) -> ASGIResponse:
    """Run the deployment in the path (a ``deploymentId`` in the body is ignored)."""
    require(request.user, "predict")
    services: Services = request.app.state.services
    content = await services.inference.predict(
        request.user, await request.body(), deployment_id, request_context(request.scope)
    )
    return ASGIResponse(body=content, media_type="application/json")


PREDICTION_ROUTES = (predict, predict_deployment)
