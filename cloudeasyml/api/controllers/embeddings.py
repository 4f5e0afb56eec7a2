"""OpenAI-compatible embeddings, so the stock ``openai`` client works with ``base_url`` set to this server.

``model`` is the name of one of the caller's tenant's deployments of an embedding model. Requests are
authenticated, batched and billed like ``/predict``. Errors are problem details that also carry OpenAI's
``error`` object, which the client reads.
"""

from __future__ import annotations

import base64
from http import HTTPStatus
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from litestar import Controller, Request, Response, post
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_200_OK

from cloudeasyml.api.auth import requires_scope
from cloudeasyml.api.problems import handle_domain_error, handle_http_exception, handle_unexpected
from cloudeasyml.api.request_log import request_context
from cloudeasyml.domain.inference import decode_json
from cloudeasyml.domain.principal import Principal
from cloudeasyml.errors import (
    CloudEasyMLError,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    InvalidInputError,
)
from cloudeasyml.services import Services

__all__ = ("OPENAI_EXCEPTION_HANDLERS", "EmbeddingsController")

MAX_INPUTS = 2048


class EmbeddingsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """OpenAI's request body (snake_case on the wire, as OpenAI's API is)."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    input: str | Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


_DECODER = msgspec.json.Decoder(EmbeddingsRequest)
_ENCODER = msgspec.json.Encoder()
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}
_ERROR_CODES: dict[type[Exception], str] = {
    IdempotencyKeyReusedError: "idempotency_key_reused",
    IdempotencyKeyInUseError: "idempotency_key_in_use",
}
"""OpenAI's ``error.code`` for the errors a client may branch on (null for the rest)."""


def _with_error(response: Response[Any], exc: Exception | None = None) -> Response[Any]:
    """Add OpenAI's ``error`` object to a problem response; invalid content is a 400 there (and so titled)."""
    body = dict(response.content)
    status = 400 if response.status_code == 422 else response.status_code or 500  # problems always carry one
    body.update(
        status=status,
        title=HTTPStatus(status).phrase,
        error={
            "message": body["detail"],
            "type": _ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": _ERROR_CODES.get(type(exc)) if exc is not None else None,
        },
    )
    return Response(body, status_code=status, media_type=response.media_type, headers=dict(response.headers))


def _encode(vector: Any, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as the openai client decodes it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


def _token_count(tokens: int | None, inputs: list[str]) -> int:
    """Tokens as the model's own tokenizer counted them when it ran (the attention mask), else whitespace words."""
    return tokens if tokens is not None else sum(len(text.split()) for text in inputs)


OPENAI_EXCEPTION_HANDLERS = {
    CloudEasyMLError: lambda r, e: _with_error(handle_domain_error(r, e), e),
    HTTPException: lambda r, e: _with_error(handle_http_exception(r, e)),
    Exception: lambda r, e: _with_error(handle_unexpected(r, e)),
}
"""Problem details that also carry OpenAI's ``error`` object, for every OpenAI-compatible route."""


class EmbeddingsController(Controller):
    """``POST /v1/embeddings``."""

    path = "/v1"
    tags = ["OpenAI-compatible"]
    guards = [requires_scope("predict")]
    exception_handlers = OPENAI_EXCEPTION_HANDLERS  # type: ignore[assignment]

    @post("/embeddings", summary="Create embeddings (OpenAI-compatible)", status_code=HTTP_200_OK)
    async def create_embeddings(self, request: Request[Principal, Any, Any]) -> Response[bytes]:
        """Body ``{"model": <deployment name>, "input": str | [str], "encoding_format"?: "float" | "base64"}``;
        answers OpenAI's ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
        "usage"}``.
        """
        services: Services = request.app.state.services
        body = decode_json(await request.body(), _DECODER)
        if body.dimensions is not None:
            raise InvalidInputError("dimensions is not supported: the model's embedding size is fixed")
        spec = await services.directory.by_name(request.user, body.model)
        entry = services.inference.entry_for(spec)
        if entry.model.task != "embedding":
            raise InvalidInputError(f"deployment {spec.name!r} serves a {entry.model.task} model, not embeddings")
        single = isinstance(body.input, str)
        texts = [body.input] if isinstance(body.input, str) else body.input
        inputs = services.inference.convert_inputs(entry, texts, "$.input", single=single)
        served = await services.inference.infer(request.user, spec, entry, inputs, request_context(request.scope))
        tokens = _token_count(served.result.tokens, inputs)  # counted by the run, which tokenized them once
        payload = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(vector, body.encoding_format)}
                for i, vector in enumerate(served.result.outputs)
            ],
            "model": spec.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(_ENCODER.encode(payload), media_type="application/json")  # X-Request-ID: request_log
