"""The error responses of every operation in the OpenAPI document, as the app really answers them.

Litestar documents only a generic 400 (with its own body, which the app never sends). ``document_problems``
lists, for each operation, the problem statuses it can answer (401 and 429 for every authenticated operation,
403 where a scope is needed, 404 with a path parameter, 400/413/422 with a body, 402/503/504 on inference, ...),
each with the problem-details body. Operations that need no key say so (``security: []``). The two raw-body
endpoints (V2 inference, OpenAI embeddings) get their request and response bodies documented here too.
``tests/integration/test_fuzz_openapi.py`` holds the app to this document with schemathesis.
"""

from __future__ import annotations

import re

from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, RequestBody, Schema

from cloudeasyml.api.auth import PUBLIC_PATHS
from cloudeasyml.api.problems import PROBLEM_JSON

__all__ = ("document_problems",)

_PUBLIC = re.compile("|".join(PUBLIC_PATHS))
_NO_SCOPE = {("GET", "/v2"), ("GET", "/models"), ("GET", "/models/{name}")}
"""Authenticated operations that any valid key may call."""
_INFERENCE = re.compile(r"^/(predict|deployments/\{deployment_id\}/predict|v1/embeddings|v2/models/.*/infer)\Z")
_REVISION = re.compile(r"^/deployments/\{deployment_id\}(/rollback|/promote|/abort)?\Z")
"""Operations that make a revision (with ``PATCH`` on the deployment itself)."""
_BATCH_CREATE = re.compile(r"^/(v1/)?batches\Z")
_FILES = re.compile(r"^/(v1/)?files(/\{file_id\})?\Z")
_OWN_ERROR_MEMBER = re.compile(r"^/(v2|v1)/")
"""Protocols whose every bad request is a 400 (V2, OpenAI): the app turns their 422s into 400s."""

_WHY = {
    400: "Malformed request (JSON that cannot be parsed, or nested too deeply)",
    401: "Missing, unknown, expired or revoked API key",
    402: "The tenant's monthly spend cap is reached (`Retry-After`)",
    403: "The key lacks the scope this operation needs, or its tenant is suspended",
    404: "No such resource for this tenant",
    409: "A conflict: a duplicate name, a deployment changed meanwhile (read it again and retry), an `Idempotency-Key` "
    "used for another request or whose first request is still running, the tenant's file storage quota, a file a job "
    "still reads, a job that has ended",
    413: "Body larger than the server's limit",
    422: "Valid JSON whose content is invalid; the detail names the field",
    429: "The key's rate limit or the tenant's monthly request cap is spent (`Retry-After`)",
    503: "Not ready, overloaded, or the model or the database cannot be used now (`Retry-After` on overload); for a "
    "change to a deployment: the new revision did not load, none was made",
    504: "No result within the deployment's deadline",
}

_PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details; V2 adds `error` (a string), OpenAI endpoints `error` (an object).",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "instance": Schema(type=OpenAPIType.STRING),
    },
)

_SCALAR = Schema(one_of=[Schema(type=t) for t in (OpenAPIType.STRING, OpenAPIType.NUMBER, OpenAPIType.BOOLEAN)])
_V2_PARAMETERS = Schema(type=OpenAPIType.OBJECT, additional_properties=_SCALAR, description="Scalar values only.")
_V2_REQUEST = Schema(
    type=OpenAPIType.OBJECT,
    required=["inputs"],
    properties={
        "id": Schema(type=OpenAPIType.STRING),
        "parameters": _V2_PARAMETERS,
        "inputs": Schema(
            type=OpenAPIType.ARRAY,
            min_items=1,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["name", "shape", "datatype"],
                properties={
                    "name": Schema(type=OpenAPIType.STRING),
                    "shape": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.INTEGER, minimum=1)),
                    "datatype": Schema(type=OpenAPIType.STRING),
                    "parameters": _V2_PARAMETERS,
                    "data": Schema(type=OpenAPIType.ARRAY, description="Row-major elements, flat or nested."),
                },
            ),
        ),
        "outputs": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["name"],
                properties={"name": Schema(type=OpenAPIType.STRING), "parameters": _V2_PARAMETERS},
            ),
        ),
    },
)
_V2_RESPONSE = Schema(
    type=OpenAPIType.OBJECT,
    required=["model_name", "model_version", "outputs"],
    properties={
        "model_name": Schema(type=OpenAPIType.STRING),
        "model_version": Schema(type=OpenAPIType.STRING),
        "id": Schema(type=OpenAPIType.STRING),
        "outputs": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
    },
)
_EMBEDDINGS_REQUEST = Schema(
    type=OpenAPIType.OBJECT,
    required=["model", "input"],
    properties={
        "model": Schema(type=OpenAPIType.STRING, description="The name of one of the tenant's deployments."),
        "input": Schema(
            one_of=[
                Schema(type=OpenAPIType.STRING),
                Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING), min_items=1),
            ]
        ),
        "encoding_format": Schema(type=OpenAPIType.STRING, enum=["float", "base64"]),
        "user": Schema(type=OpenAPIType.STRING),
    },
)
_EMBEDDINGS_RESPONSE = Schema(
    type=OpenAPIType.OBJECT,
    required=["object", "data", "model", "usage"],
    properties={
        "object": Schema(type=OpenAPIType.STRING),
        "data": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
        "model": Schema(type=OpenAPIType.STRING),
        "usage": Schema(type=OpenAPIType.OBJECT),
    },
)


def _statuses(method: str, path: str, operation: Operation) -> set[int]:
    """The problem statuses ``method path`` can answer."""
    params = {param.param_in for param in operation.parameters or [] if hasattr(param, "param_in")}
    if _PUBLIC.match(path):
        return {503} if path.endswith("/ready") else set()
    statuses = {401, 429, 503}  # 503: the database cannot be reached to check the key
    if (method, path) not in _NO_SCOPE:
        statuses.add(403)
    if "path" in params:
        statuses.add(404)
    if params - {"path"}:
        statuses.add(422)  # invalid query parameters
    if operation.request_body is not None or method in ("POST", "PUT", "PATCH"):
        statuses |= {400, 413, 422}
    if _INFERENCE.match(path):
        statuses |= {402, 404, 504}
    if method == "POST":
        statuses.add(409)  # an Idempotency-Key used for another request, or whose first request still runs
    if (method, path) in {("GET", "/usage/records"), ("GET", "/audit")}:
        statuses.add(400)  # a cursor the API did not give out
    if (method, path) == ("GET", "/invoices/{month}"):
        statuses.add(422)  # a month that is not YYYY-MM
    if (method, path) == ("POST", "/feedback"):
        statuses.add(404)  # a request id unknown, another tenant's, or answered before the retention period
    if (method, path) == ("POST", "/deployments"):
        statuses |= {404, 409}  # an unknown model or version; a duplicate name
    if _REVISION.match(path) and method in ("PATCH", "POST"):
        statuses |= {404, 409, 422}  # an unknown version or revision; a concurrent change; an invalid change
    if _BATCH_CREATE.match(path) and method == "POST":
        statuses |= {404}  # an unknown deployment or file
    if _FILES.match(path) and method in ("POST", "DELETE"):
        statuses |= {409}  # past the storage quota; the input of a job that has not ended
    if path.endswith("/cancel") and _BATCH_CREATE.match(path.removesuffix("/{batch_id}/cancel")):
        statuses |= {409}  # the job has ended
    if _OWN_ERROR_MEMBER.match(path) and 422 in statuses:
        statuses = (statuses - {422}) | {400}
    if (method, path) == ("DELETE", "/operator/tenants/{tenant_ref}"):
        statuses.add(409)  # a confirmation token that has expired, or none asked for
    return statuses


def _raw_bodies(method: str, path: str, operation: Operation) -> None:
    """Request and response bodies of the endpoints that read their body raw (Litestar cannot see them)."""
    if method != "POST":
        return
    if path.startswith("/v2/") and path.endswith("/infer"):
        operation.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=_V2_REQUEST)},
            required=True,
            description="JSON, or with `Inference-Header-Content-Length` a JSON header followed by binary tensors.",
        )
        operation.responses = {
            **(operation.responses or {}),
            "200": OpenAPIResponse(
                description="Outputs in JSON, or a JSON header and binary outputs (`Inference-Header-Content-Length`)",
                content={
                    "application/json": OpenAPIMediaType(schema=_V2_RESPONSE),
                    "application/octet-stream": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                },
            ),
        }
    elif path == "/v1/embeddings":
        operation.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=_EMBEDDINGS_REQUEST)}, required=True
        )
        operation.responses = {
            **(operation.responses or {}),
            "200": OpenAPIResponse(
                description="Embeddings, one per input, in order",
                content={"application/json": OpenAPIMediaType(schema=_EMBEDDINGS_RESPONSE)},
            ),
        }


def document_problems(app: Litestar) -> None:
    """Give every operation of ``app``'s OpenAPI document the problem responses it really answers."""
    if app.openapi_config is None:
        return
    for path, item in (app.openapi_schema.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            operation: Operation | None = getattr(item, method)
            if operation is None:
                continue
            _raw_bodies(method.upper(), path, operation)
            if _PUBLIC.match(path):
                operation.security = []
            responses = {
                status: response
                for status, response in (operation.responses or {}).items()
                if not status.startswith(("4", "5"))  # Litestar's generic 400 describes a body the app never sends
            }
            for status in sorted(_statuses(method.upper(), path, operation)):
                responses[str(status)] = OpenAPIResponse(
                    description=_WHY[status], content={PROBLEM_JSON: OpenAPIMediaType(schema=_PROBLEM)}
                )
            operation.responses = responses
