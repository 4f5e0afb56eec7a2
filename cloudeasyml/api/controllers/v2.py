"""The Open Inference Protocol (KServe V2) over REST, so stock clients such as ``tritonclient.http`` work.

The protocol's model name is the name of one of the caller's tenant's deployments; another tenant's is
unknown (404). Every route under ``/v2/models`` needs the ``predict`` scope: model metadata and readiness are
what an inference client reads before it infers. ``GET /v2`` needs any valid key; the health routes none.
Errors are problem details with an ``error`` member as well, which is what the protocol (and ``tritonclient``)
read; every bad request is a 400 here, as the protocol prescribes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, NamedTuple

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK
from litestar.types import HTTPScope, Receive

import cloudeasyml
from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.open_inference import (
    HEADER_LENGTH,
    InferenceRequest,
    InferenceResponse,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    TensorMetadata,
    decode_inputs,
    decompress,
    encode_outputs,
    select_outputs,
    split_body,
)
from cloudeasyml.api.problems import handle_domain_error, handle_http_exception, handle_unexpected, problem
from cloudeasyml.api.raw_http import read_body
from cloudeasyml.api.request_log import request_context
from cloudeasyml.core.tensors import TensorSpec
from cloudeasyml.db.errors import RETRY_AFTER_SECONDS
from cloudeasyml.domain.inference import decode_json
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.tensor_inference import infer_tensors
from cloudeasyml.errors import CloudEasyMLError, NotFoundError
from cloudeasyml.runtime.registry import DeploymentSpec
from cloudeasyml.services import Services

__all__ = ("V2_EXCEPTION_HANDLERS", "InferAnswer", "OpenInferenceController", "infer_answer")

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]

_REQUEST_DECODER = msgspec.json.Decoder(InferenceRequest)
_ENCODER = msgspec.json.Encoder()

_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()

_MODEL = "/models/{name:str}"
_VERSION = "/models/{name:str}/versions/{version:str}"


def _with_error(response: Response[Any]) -> Response[Any]:
    """Add the protocol's ``error`` member to a problem response; a 422 becomes the protocol's 400."""
    body = dict(response.content)
    status = 400 if response.status_code == 422 else response.status_code or 500  # problems always carry one
    body.update(status=status, title=HTTPStatus(status).phrase, error=body["detail"])
    return Response(body, status_code=status, media_type=response.media_type, headers=dict(response.headers))


def _domain_error(request: Request[Any, Any, Any], exc: CloudEasyMLError) -> Response[Any]:
    return _with_error(handle_domain_error(request, exc))


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _with_error(handle_http_exception(request, exc))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return _with_error(handle_unexpected(request, exc))


V2_EXCEPTION_HANDLERS: dict[int | type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]] = {
    CloudEasyMLError: _domain_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
"""The V2 dialect of ``cloudeasyml.api.problems.exception_handlers``: every problem also carries ``error``."""


def _tensors(specs: tuple[TensorSpec, ...]) -> list[TensorMetadata]:
    return [TensorMetadata(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in specs]


async def _deployment(services: Services, principal: Principal, name: str, version: str | None) -> DeploymentSpec:
    """The caller's deployment called ``name``; a ``version`` other than its model's is unknown."""
    spec = await services.directory.by_name(principal, name)
    if version is not None and version != spec.model_version:
        raise NotFoundError(f"deployment {name!r} serves version {spec.model_version!r}, not {version!r}")
    return spec


def _header(scope: HTTPScope, name: bytes) -> str | None:
    """The first value of request header ``name`` (lower case, as ASGI gives names)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _read_request(scope: HTTPScope, receive: Receive, max_body_bytes: int) -> tuple[InferenceRequest, bytes]:
    """The request's JSON header, decoded, and the binary tensor data after it."""
    body = decompress(
        await read_body(scope, receive, max_body_bytes), _header(scope, b"content-encoding"), max_body_bytes
    )
    header, binary = split_body(body, _header(scope, _HEADER_LENGTH_KEY))
    return decode_json(header, _REQUEST_DECODER), binary


async def _metadata(request: Request[Principal, Any, Any], name: str, version: str | None = None) -> ModelMetadata:
    """The deployment's metadata, with its model plugin's tensors."""
    services: Services = request.app.state.services
    spec = await _deployment(services, request.user, name, version)
    model = services.inference.entry_for(spec).model
    return ModelMetadata(
        name=spec.name,
        versions=[spec.model_version],
        platform=PLATFORM,
        inputs=_tensors(model.input_tensors),
        outputs=_tensors(model.output_tensors),
    )


async def _ready(request: Request[Principal, Any, Any], name: str, version: str | None = None) -> Response[Any]:
    """Ready when loaded here, or when its model is installed and its graph already exported, so that the first
    inference only opens a session. Never loads or exports anything: a readiness poll must cost nothing, or any
    key could make the server load models on demand. Not ready is a 503 with ``ready: false``.
    """
    services: Services = request.app.state.services
    spec = await _deployment(services, request.user, name, version)
    reason = await _not_ready_reason(services, spec)
    if reason is not None:
        return problem(request, 503, reason, name=spec.name, ready=False, error=reason)
    return Response(ModelReady(name=spec.name, ready=True))


async def _not_ready_reason(services: Services, spec: DeploymentSpec) -> str | None:
    if services.registry.get_loaded(spec.id) is not None:
        return None
    try:
        model = services.inference.entry_for(spec).model
        # Hashing the weights (once per version, then cached) reads a file: off the event loop.
        graph = await asyncio.to_thread(services.resolver.find, model, spec.model_version)
    except CloudEasyMLError as exc:
        return exc.detail
    if graph is None:
        return f"deployment {spec.name!r} is not loaded and its model has not been exported yet; it loads on first use"
    return None


class InferAnswer(NamedTuple):
    """An inference answer, encoded: the JSON header, then any binary tensor data."""

    body: bytes
    header_length: int | None
    """The JSON header's length when binary data follows it (``Inference-Header-Content-Length``), else None."""


async def infer_answer(scope: HTTPScope, receive: Receive, name: str, version: str | None) -> InferAnswer:
    """Decode the tensors, run and bill them, and encode the answer: the handler body of both ``infer`` routes, and
    of the fast path's (``cloudeasyml.api.fast_path``). The caller is authenticated (``scope["user"]``) and holds
    the ``predict`` scope; the body is read here, raw, as ``read_body`` reads it for ``/predict``.
    """
    principal: Principal = scope["user"]
    services: Services = scope["litestar_app"].state.services
    spec = await _deployment(services, principal, name, version)
    infer_request, binary = await _read_request(scope, receive, services.settings.server.max_body_bytes)
    arrays = decode_inputs(infer_request.inputs, binary, services.settings.v2)
    model = services.inference.entry_for(spec).model
    selected = select_outputs(infer_request, [t.name for t in model.output_tensors])
    context = request_context(scope)
    result = await infer_tensors(services.inference, principal, spec, arrays, context)
    outputs, blob = encode_outputs(result.outputs, selected)
    served_version = context.model_version or spec.model_version  # the route that served it (a traffic split)
    response = InferenceResponse(
        model_name=spec.name, model_version=served_version, outputs=outputs, id=infer_request.id
    )
    header = _ENCODER.encode(response)
    if not any(binary for _, binary in selected):
        return InferAnswer(header, None)
    return InferAnswer(header + blob, len(header))


async def _infer(request: Request[Principal, Any, Any], name: str, version: str | None = None) -> Response[bytes]:
    """``infer_answer`` as a Litestar response."""
    answer = await infer_answer(request.scope, request.receive, name, version)
    if answer.header_length is None:
        return Response(answer.body, media_type="application/json")
    headers = {HEADER_LENGTH: str(answer.header_length)}
    return Response(answer.body, media_type="application/octet-stream", headers=headers)


class OpenInferenceController(Controller):
    """Health, server and model metadata, model readiness and inference under ``/v2``."""

    path = "/v2"
    tags = ["Open Inference Protocol (V2)"]
    exception_handlers = V2_EXCEPTION_HANDLERS

    @get("/", summary="Server metadata")
    async def server_metadata(self) -> ServerMetadata:
        """Name, version and the protocol extensions this server supports."""
        return ServerMetadata(name="cloudeasyml", version=cloudeasyml.__version__, extensions=EXTENSIONS)

    @get("/health/live", summary="Server liveness")
    async def live(self) -> Live:
        """The process is up (no key needed)."""
        return Live(live=True)

    @get("/health/ready", summary="Server readiness")
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Ready when the database answers at the current schema and the ``eagerLoad`` deployments have loaded (no
        key needed); other deployments load on first use.
        """
        services: Services = request.app.state.services
        reason = await services.not_ready_reason()
        if reason is not None:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            return problem(request, 503, reason, headers=headers, ready=False, error=reason)
        return Response(Ready(ready=True))

    @get(_MODEL, summary="Model metadata", guards=[requires_scope("predict")])
    async def model_metadata(self, request: Request[Principal, Any, Any], name: FromPath[str]) -> ModelMetadata:
        """The deployment's version, platform and input and output tensors (-1: a dynamic axis)."""
        return await _metadata(request, name)

    @get(_VERSION, summary="Model metadata of a version", guards=[requires_scope("predict")])
    async def version_metadata(
        self, request: Request[Principal, Any, Any], name: FromPath[str], version: FromPath[str]
    ) -> ModelMetadata:
        """As ``GET /v2/models/{name}``; a version other than the deployment's is a 404."""
        return await _metadata(request, name, version)

    @get(f"{_MODEL}/ready", summary="Model readiness", guards=[requires_scope("predict")])
    async def model_ready(self, request: Request[Principal, Any, Any], name: FromPath[str]) -> Response[Any]:
        """Ready (200) when loaded, or loadable without an export; otherwise 503 with ``ready: false``. Never loads
        or exports the model: the first inference does.
        """
        return await _ready(request, name)

    @get(f"{_VERSION}/ready", summary="Model readiness of a version", guards=[requires_scope("predict")])
    async def version_ready(
        self, request: Request[Principal, Any, Any], name: FromPath[str], version: FromPath[str]
    ) -> Response[Any]:
        """As ``GET /v2/models/{name}/ready``; a version other than the deployment's is a 404."""
        return await _ready(request, name, version)

    @post(f"{_MODEL}/infer", summary="Inference", status_code=HTTP_200_OK, guards=[requires_scope("predict")])
    async def infer(self, request: Request[Principal, Any, Any], name: FromPath[str]) -> Response[bytes]:
        """Run the graph on named tensors (JSON or binary); each successful request is billed once."""
        return await _infer(request, name)

    @post(
        f"{_VERSION}/infer",
        summary="Inference on a version",
        status_code=HTTP_200_OK,
        guards=[requires_scope("predict")],
    )
    async def version_infer(
        self, request: Request[Principal, Any, Any], name: FromPath[str], version: FromPath[str]
    ) -> Response[bytes]:
        """As ``POST /v2/models/{name}/infer``; a version other than the deployment's is a 404."""
        return await _infer(request, name, version)
