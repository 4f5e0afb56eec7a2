"""The lines of batch files: how an input line is read and how its result or error is written.

Two formats:

- native (``POST /batches``): ``{"input": <one input in the model's schema>, "customId"?: "..."}`` per line;
  an output line is ``{"line": n, "customId": ..., "output": <the prediction>}``, an error line
  ``{"line": n, "customId": ..., "error": <problem details>}``.
- OpenAI (``POST /v1/batches``, endpoint ``/v1/embeddings``): ``{"custom_id", "method": "POST", "url":
  "/v1/embeddings", "body": {"model", "input", "encoding_format"?}}`` per line; output and error lines are OpenAI's
  batch request output objects (``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
  "error"}``).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from cloudeasyml.errors import InvalidInputError, MalformedRequestError
from cloudeasyml.plugins.model import ModelPlugin

__all__ = ("EMBEDDINGS", "Line", "LineFormat", "describe_plain", "line_format")

EMBEDDINGS = "/v1/embeddings"

Describe = Callable[[Exception], dict[str, Any]]
"""An error as the problem details an online request would have got (``api.problems.problem_body``)."""

_NS = uuid.UUID("0f6b9d0e-3c1a-4c56-8e0b-7b0c2a9d4e21")


def describe_plain(exc: Exception) -> dict[str, Any]:
    """Problem details without the HTTP status table (the default where the edge gave none)."""
    title = exc.title if hasattr(exc, "title") else "Error"
    detail = exc.detail if hasattr(exc, "detail") else "internal error"
    return {"type": "about:blank", "title": title, "detail": detail}


class Line(msgspec.Struct):
    """One non-blank input line: its number in the file, its id, and either the inputs it holds or why not."""

    number: int
    custom_id: str | None
    items: list[Any]
    error: Exception | None = None
    options: Any = None
    outputs: list[Any] | None = None
    request_id: str | None = None


class _Native(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    input: msgspec.Raw
    custom_id: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class _OpenAIBody(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    input: str | Annotated[list[str], msgspec.Meta(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class _OpenAI(msgspec.Struct, forbid_unknown_fields=True):
    custom_id: Annotated[str, msgspec.Meta(max_length=512)]
    method: Literal["POST"]
    url: str
    body: _OpenAIBody


class _CustomId(msgspec.Struct):
    """What a line that does not parse may still tell: its id."""

    custom_id: str | None = None
    customId: str | None = None  # noqa: N815 - the native format's key, read as is


_ID_DECODER = msgspec.json.Decoder(_CustomId)


def _salvage_id(raw: bytes) -> str | None:
    try:
        found = _ID_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    return found.custom_id or found.customId


class LineFormat:
    """Reads input lines and writes result lines of one job, on one model."""

    def __init__(
        self, job_id: str, model: ModelPlugin, inputs_type: Any, describe: Describe, *, deployment: str
    ) -> None:
        self._job_id = job_id
        self._model = model
        self._inputs = msgspec.json.Decoder(inputs_type)
        self._describe = describe
        self._deployment = deployment
        self._encoder = msgspec.json.Encoder()

    def parse(self, data: bytes, first_line: int) -> list[Line]:
        """The non-blank lines of ``data`` (a chunk), numbered from ``first_line``."""
        lines = []
        for offset, raw in enumerate(data.split(b"\n")):
            if raw.strip():
                lines.append(self._parse(raw, first_line + offset))
        return lines

    def _parse(self, raw: bytes, number: int) -> Line:
        raise NotImplementedError

    def _decode_items(self, raw: bytes, where: str) -> list[Any]:
        try:
            return self._inputs.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidInputError(f"{exc} - at `{where}`") from exc
        except (msgspec.DecodeError, RecursionError) as exc:
            raise MalformedRequestError(f"malformed JSON at `{where}`") from exc

    def encode(self, line: Line) -> tuple[bytes | None, bytes | None]:
        """The line's output line or error line (one of them), each ending with a newline."""
        raise NotImplementedError

    def request_id(self, number: int) -> str:
        """A stable id of one line of this job (the same on every run of its chunk)."""
        return uuid.uuid5(_NS, f"{self._job_id}/{number}").hex


class NativeFormat(LineFormat):
    """``{"input", "customId"?}`` lines."""

    _decoder = msgspec.json.Decoder(_Native)

    def _parse(self, raw: bytes, number: int) -> Line:
        try:
            envelope = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return Line(number, _salvage_id(raw), [], InvalidInputError(f"line {number}: {exc}"))
        except (msgspec.DecodeError, RecursionError):
            return Line(number, None, [], MalformedRequestError(f"line {number} is not valid JSON"))
        try:
            items = self._decode_items(b"[" + bytes(envelope.input) + b"]", "$.input")
        except InvalidInputError as exc:
            return Line(number, envelope.custom_id, [], exc)
        return Line(number, envelope.custom_id, items)

    def encode(self, line: Line) -> tuple[bytes | None, bytes | None]:
        """See ``LineFormat.encode``."""
        if line.error is not None:
            body = {"line": line.number, "customId": line.custom_id, "error": self._describe(line.error)}
            return None, self._encoder.encode(body) + b"\n"
        assert line.outputs is not None
        body = {"line": line.number, "customId": line.custom_id, "output": line.outputs[0]}
        return self._encoder.encode(body) + b"\n", None


_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


class OpenAIFormat(LineFormat):
    """OpenAI batch request lines for ``/v1/embeddings``."""

    _decoder = msgspec.json.Decoder(_OpenAI)

    def _parse(self, raw: bytes, number: int) -> Line:
        try:
            request = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return Line(number, _salvage_id(raw), [], InvalidInputError(f"line {number}: {exc}"))
        except (msgspec.DecodeError, RecursionError):
            return Line(number, None, [], MalformedRequestError(f"line {number} is not valid JSON"))
        body = request.body
        if request.url != EMBEDDINGS:
            error: Exception = InvalidInputError(f"url must be {EMBEDDINGS}, the batch's endpoint")
            return Line(number, request.custom_id, [], error)
        if body.model != self._deployment:
            error = InvalidInputError(f"model {body.model!r} is not this batch's deployment {self._deployment!r}")
            return Line(number, request.custom_id, [], error)
        if body.dimensions is not None:
            error = InvalidInputError("dimensions is not supported: the model's embedding size is fixed")
            return Line(number, request.custom_id, [], error)
        texts = [body.input] if isinstance(body.input, str) else body.input
        try:
            items = self._decode_items(msgspec.json.encode(texts), "$.body.input")
        except InvalidInputError as exc:
            return Line(number, request.custom_id, [], exc)
        return Line(number, request.custom_id, items, options=body.encoding_format)

    def encode(self, line: Line) -> tuple[bytes | None, bytes | None]:
        """See ``LineFormat.encode``."""
        request_id = line.request_id or self.request_id(line.number)
        if line.error is not None:
            problem = self._describe(line.error)
            status = int(problem.get("status", 400))
            status = 400 if status == 422 else status  # invalid content is a 400 at OpenAI (as /v1/embeddings)
            error = {
                "message": problem["detail"],
                "type": _ERROR_TYPES.get(status, "api_error"),
                "param": None,
                "code": None,
            }
            response = {"status_code": status, "request_id": request_id, "body": {"error": error}}
            failed = {"id": f"batch_req_{self.request_id(line.number)[:24]}", "custom_id": line.custom_id}
            return None, self._encoder.encode({**failed, "response": response, "error": None}) + b"\n"
        assert line.outputs is not None
        tokens = token_count(self._model, line.items)
        encoding = line.options or "float"
        payload = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode_vector(vector, encoding)}
                for i, vector in enumerate(line.outputs)
            ],
            "model": self._deployment,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        body: dict[str, Any] = {
            "id": f"batch_req_{self.request_id(line.number)[:24]}",
            "custom_id": line.custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": payload},
            "error": None,
        }
        return self._encoder.encode(body) + b"\n", None


def line_format(
    endpoint: str | None, job_id: str, model: ModelPlugin, inputs_type: Any, describe: Describe, *, deployment: str
) -> LineFormat:
    """The format of a job's lines: OpenAI's for a job of ``/v1/batches``, else the native one."""
    cls = OpenAIFormat if endpoint == EMBEDDINGS else NativeFormat
    return cls(job_id, model, inputs_type, describe, deployment=deployment)


def encode_vector(vector: Any, encoding: str) -> list[float] | str:
    """An embedding as OpenAI sends it: floats, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


def token_count(model: ModelPlugin, inputs: list[Any]) -> int:
    """Tokens as the model's own tokenizer counts them (the attention mask), else whitespace words."""
    names = {spec.name for spec in model.input_tensors}
    if "attention_mask" in names:
        return int(model.to_arrays(inputs)["attention_mask"].sum())
    return sum(len(str(text).split()) for text in inputs)
