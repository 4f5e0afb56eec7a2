"""Wire format of the Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor data extension.

Field names are snake_case on this wire (``model_name``, ``binary_data_size``) because the protocol says so;
these Structs therefore do not use ``rename="camel"``. Tensor data arrives as JSON lists (flat or nested,
row-major) or, with the binary extension, as raw little-endian bytes after a JSON header whose length is in
the ``Inference-Header-Content-Length`` header. See
https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and Triton's
``docs/protocol/extension_binary_data.md``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np

from cloudeasyml.domain.tensor_inference import DTYPE_BY_DATATYPE, datatype_of
from cloudeasyml.errors import InvalidInputError, MalformedRequestError
from cloudeasyml.settings import OpenInferenceSettings

__all__ = (
    "HEADER_LENGTH",
    "InferenceRequest",
    "InferenceResponse",
    "Live",
    "ModelMetadata",
    "ModelReady",
    "Ready",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "ServerMetadata",
    "TensorMetadata",
    "decode_inputs",
    "decompress",
    "encode_outputs",
    "select_outputs",
    "split_body",
)

HEADER_LENGTH = "Inference-Header-Content-Length"
"""Request and response header: the byte length of the JSON part of a body that carries binary tensors."""

DEFAULT_LIMITS = OpenInferenceSettings()
"""The default tensor bounds (``CLOUDEASYML_V2__*``)."""

Parameters = dict[str, str | int | float | bool | None]
"""The protocol's parameters are scalars, so a deeply nested value is refused while it is decoded (400)."""

# JSON numbers decode to Python ints, floats and bools; which of numpy's kinds each datatype accepts.
_JSON_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}
_UNSUPPORTED_OUTPUT_PARAMETERS = ("classification", "shared_memory_region")


class TensorMetadata(msgspec.Struct, frozen=True):
    """One tensor in model metadata."""

    name: str
    datatype: str
    shape: list[int]
    """Dimensions; -1 marks a dynamic axis (axis 0 is the batch)."""


class ModelMetadata(msgspec.Struct, frozen=True):
    """``GET /v2/models/{name}``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(msgspec.Struct, frozen=True):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class Live(msgspec.Struct, frozen=True):
    """``GET /v2/health/live``."""

    live: bool


class Ready(msgspec.Struct, frozen=True):
    """``GET /v2/health/ready``."""

    ready: bool


class ModelReady(msgspec.Struct, frozen=True):
    """``GET /v2/models/{name}/ready``."""

    name: str
    ready: bool


class RequestInput(msgspec.Struct, frozen=True):
    """One input tensor of an inference request."""

    name: str
    shape: list[Annotated[int, msgspec.Meta(ge=0)]]
    datatype: str
    parameters: Parameters = {}
    """``binary_data_size``: the tensor's bytes follow the JSON header instead of ``data``."""
    data: Any = None
    """Row-major elements, as a flat or a nested list."""


class RequestOutput(msgspec.Struct, frozen=True):
    """One requested output."""

    name: str
    parameters: Parameters = {}
    """``binary_data``: return this output as raw bytes after the JSON header."""


class InferenceRequest(msgspec.Struct, frozen=True):
    """``POST /v2/models/{name}/infer``."""

    inputs: Annotated[list[RequestInput], msgspec.Meta(min_length=1)]
    id: str | None = None
    parameters: Parameters = {}
    """``binary_data_output``: return every output as raw bytes unless the output says otherwise."""
    outputs: list[RequestOutput] | None = None
    """The outputs to return; all of them when absent."""


class ResponseOutput(msgspec.Struct, omit_defaults=True):
    """One output tensor of an inference response."""

    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(msgspec.Struct, omit_defaults=True):
    """The JSON (header) part of an inference response."""

    model_name: str
    model_version: str
    outputs: list[ResponseOutput]
    id: str | None = None


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a request's ``Content-Encoding`` (``gzip`` or ``deflate``, as ``tritonclient`` can send).

    Raises:
        MalformedRequestError: Unknown encoding, corrupt data, or more than ``limit`` bytes once inflated.
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise MalformedRequestError(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)  # bounded: a small bomb must not inflate without end
    except zlib.error as exc:
        raise MalformedRequestError(f"body is not valid {encoding} data: {exc}") from exc
    if len(data) > limit:
        raise MalformedRequestError(f"body inflates to more than {limit} bytes")
    if not inflater.eof:
        raise MalformedRequestError(f"body is truncated {encoding} data")
    return data


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """Split a body into its JSON header and the binary tensor data after it.

    Args:
        body: The request body.
        header_length: The ``Inference-Header-Content-Length`` header, if sent.

    Raises:
        MalformedRequestError: The header is not an integer within the body.
    """
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise MalformedRequestError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise MalformedRequestError(f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes")
    return body[:length], body[length:]


def decode_inputs(
    inputs: Sequence[RequestInput], binary: bytes, limits: OpenInferenceSettings = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """Turn request inputs into named arrays, taking binary tensors from ``binary`` in input order.

    Every shape is checked against ``limits`` before any array is made, so a request cannot make the server
    allocate more than its own body (and the bounds) allow.

    Raises:
        InvalidInputError: Duplicate names, unsupported datatypes, shapes past ``limits`` or with a 0 dimension,
            data that does not fill the shape, or binary data that does not add up.
    """
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    total = 0
    for tensor in inputs:
        if tensor.name in arrays:
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        total += _check_shape(tensor, limits)
        if total > limits.max_request_elements:
            raise InvalidInputError(
                f"the input tensors hold more than {limits.max_request_elements} elements in all; send fewer"
            )
        dtype = _dtype(tensor.name, tensor.datatype)
        size = _binary_size(tensor)
        if size is None:
            arrays[tensor.name] = _from_json(tensor, dtype)
            continue
        chunk = binary[offset : offset + size]
        if len(chunk) != size:
            raise InvalidInputError(
                f"input {tensor.name!r}: the body ends before its {size} bytes of binary data (is {HEADER_LENGTH} set?)"
            )
        arrays[tensor.name] = _from_bytes(tensor, dtype, chunk)
        offset += size
    if offset != len(binary):
        raise InvalidInputError(f"{len(binary) - offset} bytes of binary data belong to no input")
    return arrays


def _check_shape(tensor: RequestInput, limits: OpenInferenceSettings) -> int:
    """The tensor's element count, once its shape is within ``limits`` (Python ints: no overflow)."""
    shape = tensor.shape
    if not 1 <= len(shape) <= limits.max_tensor_dims:
        raise InvalidInputError(
            f"input {tensor.name!r}: shape has {len(shape)} dimensions; 1 to {limits.max_tensor_dims} are accepted"
        )
    if 0 in shape:
        raise InvalidInputError(f"input {tensor.name!r}: shape {shape} has a dimension of 0; every one must be >= 1")
    elements = math.prod(shape)
    if elements > limits.max_tensor_elements:
        raise InvalidInputError(
            f"input {tensor.name!r}: shape {_short(shape)} holds {elements} elements; at most "
            f"{limits.max_tensor_elements} are accepted per tensor"
        )
    return elements


def _short(shape: list[int]) -> str:
    """A shape for a message, cut short when a hostile one is long."""
    return str(shape) if len(shape) <= 8 else f"{str(shape[:8])[:-1]}, ...]"


def _nesting(data: Any, most: int) -> int:
    """How deep ``data`` nests lists along its first elements, counting no further than ``most + 1``."""
    depth = 0
    while isinstance(data, list) and depth <= most:
        depth += 1
        data = data[0] if data else None
    return depth


def _dtype(name: str, datatype: str) -> np.dtype:
    dtype = DTYPE_BY_DATATYPE.get(datatype)
    if dtype is None:
        raise InvalidInputError(
            f"input {name!r}: unsupported datatype {datatype!r}; known: {sorted(DTYPE_BY_DATATYPE)}"
        )
    return dtype


def _binary_size(tensor: RequestInput) -> int | None:
    size = tensor.parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(f"input {tensor.name!r}: binary_data_size must be a non-negative integer")
    if tensor.data is not None:
        raise InvalidInputError(f"input {tensor.name!r} has both data and binary_data_size")
    return size


def _from_bytes(tensor: RequestInput, dtype: np.dtype, chunk: bytes) -> np.ndarray:
    expected = math.prod(tensor.shape) * dtype.itemsize
    if len(chunk) != expected:
        raise InvalidInputError(
            f"input {tensor.name!r}: binary_data_size is {len(chunk)} bytes; shape {tensor.shape} of "
            f"{tensor.datatype} needs {expected}"
        )
    # The extension's bytes are little-endian whatever the machine; astype is free where that is native.
    array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).reshape(tensor.shape)
    return array.astype(dtype, copy=False)


def _from_json(tensor: RequestInput, dtype: np.dtype) -> np.ndarray:
    if tensor.data is None:
        raise InvalidInputError(f"input {tensor.name!r} has neither data nor parameters.binary_data_size")
    if not isinstance(tensor.data, list):
        raise InvalidInputError(f"input {tensor.name!r}: data must be a list")
    if _nesting(tensor.data, len(tensor.shape)) > len(tensor.shape):
        raise InvalidInputError(f"input {tensor.name!r}: data is nested deeper than its {len(tensor.shape)} dimensions")
    try:
        raw = np.asarray(tensor.data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # ragged, or nested deeper further on
        raise InvalidInputError(f"input {tensor.name!r}: data is not a rectangular list of numbers") from exc
    if raw.size and dtype.kind in "iu" and raw.dtype.kind in "fO":
        raw = _exact_integers(tensor, raw, dtype)
    if raw.size and raw.dtype.kind not in _JSON_KINDS[dtype.kind]:
        raise InvalidInputError(f"input {tensor.name!r}: data holds values that are not {tensor.datatype}")
    if raw.ndim > 1 and list(raw.shape) != tensor.shape:
        raise InvalidInputError(f"input {tensor.name!r}: nested data has shape {list(raw.shape)}, not {tensor.shape}")
    if raw.size != math.prod(tensor.shape):
        raise InvalidInputError(
            f"input {tensor.name!r}: shape {tensor.shape} needs {math.prod(tensor.shape)} elements, data has {raw.size}"
        )
    if raw.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInputError(f"input {tensor.name!r}: values out of range for {tensor.datatype}")
    return raw.astype(dtype).reshape(tensor.shape)


def _exact_integers(tensor: RequestInput, raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer data that numpy's guess turned into float64 or objects: a list mixing values past 2**63 with others
    (valid UINT64, e.g. ``[2**64 - 1, 1]``) becomes float64 and would lose its low bits. Rebuilt from the Python
    ints, range-checked against ``dtype``, when every value is one; otherwise left as it was, to be refused as not of
    the tensor's type.
    """
    values = np.asarray(tensor.data, dtype=object).reshape(-1)
    if not all(type(value) is int for value in values):
        return raw
    info = np.iinfo(dtype)
    if min(values) < info.min or max(values) > info.max:
        raise InvalidInputError(f"input {tensor.name!r}: values out of range for {tensor.datatype}")
    return np.array(values, dtype=dtype).reshape(raw.shape)


def select_outputs(request: InferenceRequest, available: Sequence[str]) -> list[tuple[str, bool]]:
    """The outputs to return, in order, each with whether it goes as binary data.

    Raises:
        InvalidInputError: Unknown, duplicate or unsupported requested outputs.
    """
    default_binary = _flag(request.parameters, "binary_data_output", "request", default=False)
    if request.outputs is None:
        return [(name, default_binary) for name in available]
    selected: list[tuple[str, bool]] = []
    for output in request.outputs:
        if output.name not in available:
            raise InvalidInputError(f"unknown output {output.name!r}; the model's outputs are {sorted(available)}")
        if any(name == output.name for name, _ in selected):
            raise InvalidInputError(f"output {output.name!r} is requested twice")
        unsupported = [key for key in _UNSUPPORTED_OUTPUT_PARAMETERS if key in output.parameters]
        if unsupported:
            raise InvalidInputError(f"output {output.name!r}: parameter(s) {unsupported} are not supported")
        binary = _flag(output.parameters, "binary_data", f"output {output.name!r}", default=default_binary)
        selected.append((output.name, binary))
    return selected


def _flag(parameters: Parameters, key: str, where: str, *, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{where}: parameter {key} must be true or false")
    return value


def encode_outputs(
    outputs: Mapping[str, np.ndarray], selected: Sequence[tuple[str, bool]]
) -> tuple[list[ResponseOutput], bytes]:
    """Response entries for the selected outputs, and the binary data that follows the JSON header."""
    entries: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for name, binary in selected:
        array = outputs[name]
        datatype, shape = datatype_of(array.dtype), list(array.shape)
        if binary:
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entries.append(ResponseOutput(name, datatype, shape, parameters={"binary_data_size": len(raw)}))
            blobs.append(raw)
        else:
            entries.append(ResponseOutput(name, datatype, shape, data=array.ravel().tolist()))
    return entries, b"".join(blobs)
