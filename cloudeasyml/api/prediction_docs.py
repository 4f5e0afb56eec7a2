"""OpenAPI operations of the prediction endpoints.

They are ASGI route handlers (see ``cloudeasyml.api.controllers.inference``), which Litestar leaves out of the
schema it generates; ``document_prediction_routes`` adds them to the app's schema once it is built. Each
input's own schema depends on the model: ``GET /models/{name}`` gives it as ``inputSchema``.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    RequestBody,
    Schema,
)

__all__ = ("document_prediction_routes",)

_DESCRIPTION = (
    "Each input follows the model's `inputSchema` (`GET /models/{name}`); `predictions` holds one output per "
    "input, in order, following the model's `outputSchema`. Each successful request is billed once, for its "
    "share (by inputs) of the processing time of the batch it ran in; a failed request is not billed."
)
_INPUTS = Schema(
    type=OpenAPIType.ARRAY,
    items=Schema(description="One input, as the model's inputSchema describes it."),
    min_items=1,
    description="The inputs to run; each is one item of a batch.",
)
_ANSWER = Schema(
    type=OpenAPIType.OBJECT,
    required=["predictions", "modelName", "modelVersion", "deploymentId", "processingTimeMs", "requestId"],
    properties={
        "predictions": Schema(
            type=OpenAPIType.ARRAY, items=Schema(description="One output, as the model's outputSchema describes it.")
        ),
        "modelName": Schema(type=OpenAPIType.STRING),
        "modelVersion": Schema(type=OpenAPIType.STRING),
        "deploymentId": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
        "processingTimeMs": Schema(
            type=OpenAPIType.NUMBER, description="This request's share of its batch's processing time (billed)."
        ),
        "requestId": Schema(type=OpenAPIType.STRING, description="Also the id of the request's usage record."),
    },
)


def _operation(operation_id: str, summary: str, body: Schema, parameters: list[Parameter] | None) -> Operation:
    answer = {"application/json": OpenAPIMediaType(schema=_ANSWER)}
    # The problem responses come from ``problem_docs.document_problems``, as for every other operation.
    responses = {"200": OpenAPIResponse(description="Predictions", content=answer)}
    return Operation(
        tags=["Inference"],
        summary=summary,
        description=_DESCRIPTION,
        operation_id=operation_id,
        parameters=parameters,  # type: ignore[arg-type]
        request_body=RequestBody(content={"application/json": OpenAPIMediaType(schema=body)}, required=True),
        responses=responses,  # type: ignore[arg-type]
    )


def _paths() -> dict[str, PathItem]:
    by_body = Schema(
        type=OpenAPIType.OBJECT,
        required=["deploymentId", "inputs"],
        properties={"deploymentId": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID), "inputs": _INPUTS},
    )
    in_path = Schema(type=OpenAPIType.OBJECT, required=["inputs"], properties={"inputs": _INPUTS})
    deployment = Parameter(
        name="deployment_id",
        param_in="path",
        required=True,
        schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
        description="The deployment to run.",
    )
    return {
        "/predict": PathItem(post=_operation("Predict", "Predict", by_body, None)),
        "/deployments/{deployment_id}/predict": PathItem(
            post=_operation("PredictDeployment", "Predict with the deployment in the path", in_path, [deployment])
        ),
    }


def document_prediction_routes(app: Litestar) -> None:
    """Add the prediction operations to ``app``'s OpenAPI schema (built now, served from then on)."""
    if app.openapi_config is None:
        return
    schema = app.openapi_schema
    schema.paths = {**(schema.paths or {}), **_paths()}
