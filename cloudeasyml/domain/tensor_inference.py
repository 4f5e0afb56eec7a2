"""Raw named tensors through a deployment (the Open Inference Protocol path): validate, run, time, bill.

Unlike ``/predict``, the caller sends the graph's own input tensors, so the plugin's ``to_arrays`` and
``from_outputs`` are skipped and requests are not batched together: each one is already a batch, run by itself
through the deployment's batcher queue (its instances, queue bound, deadline and drain). Metering is
the same: one usage record per successful request, ``items`` = the batch size (axis 0), priced with the
model's pricing over the time the session ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cloudeasyml.core.tensors import TensorSpec
from cloudeasyml.domain.inference import InferenceService
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.request_context import RequestContext
from cloudeasyml.errors import InvalidInputError
from cloudeasyml.plugins.model import ModelPlugin
from cloudeasyml.runtime.batcher import BatchResult
from cloudeasyml.runtime.registry import DeploymentSpec, LoadedDeployment

__all__ = ("DTYPE_BY_DATATYPE", "TensorResult", "check_inputs", "datatype_of", "infer_tensors")

DTYPE_BY_DATATYPE: Mapping[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
"""Open Inference Protocol datatypes with a fixed-size numpy equivalent (``BYTES`` has none)."""

_DATATYPE_BY_DTYPE = {dtype: name for name, dtype in DTYPE_BY_DATATYPE.items()}


@dataclass(frozen=True, slots=True)
class TensorResult:
    """The outcome of one successful tensor request."""

    outputs: dict[str, np.ndarray]
    """The graph's outputs by name."""
    processing_ms: float
    """Time the session ran: what the request is billed for."""
    request_id: str
    """Id of the usage record."""


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's name of a numpy dtype (``float32`` → ``FP32``).

    Raises:
        ValueError: The dtype has no protocol equivalent.
    """
    name = _DATATYPE_BY_DTYPE.get(np.dtype(dtype).newbyteorder("="))
    if name is None:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")
    return name


def check_inputs(model: ModelPlugin, arrays: Mapping[str, np.ndarray], max_batch_size: int) -> int:
    """Check named arrays against the model's ``input_tensors``.

    Args:
        model: The deployment's model plugin.
        arrays: The request's tensors by name.
        max_batch_size: Largest batch (axis 0) the deployment accepts.

    Returns:
        The batch size, shared by every input.

    Raises:
        InvalidInputError: Unknown or missing names, a wrong datatype or shape, or a bad batch size.
    """
    specs = {spec.name: spec for spec in model.input_tensors}
    unknown = sorted(set(arrays) - set(specs))
    missing = sorted(set(specs) - set(arrays))
    if unknown or missing:
        parts = [f"unknown input(s) {unknown}" if unknown else "", f"missing input(s) {missing}" if missing else ""]
        raise InvalidInputError(f"{'; '.join(p for p in parts if p)}; the model's inputs are {sorted(specs)}")
    for spec in model.input_tensors:
        _check_tensor(spec, arrays[spec.name])
    sizes = _dynamic_sizes(model.input_tensors, arrays)
    for axis, by_input in sizes.items():
        if len(set(by_input.values())) > 1:
            raise InvalidInputError(f"inputs disagree on the size of their {axis!r} axis: {by_input}")
    batch = next(iter(sizes["batch"].values()))
    if not 1 <= batch <= max_batch_size:
        raise InvalidInputError(f"batch size (axis 0) is {batch}; this deployment takes 1 to {max_batch_size}")
    return batch


def _dynamic_sizes(specs: tuple[TensorSpec, ...], arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Sizes of the named dynamic axes (``batch``, ``sequence``, ...) by input: axes of one name must agree."""
    sizes: dict[str, dict[str, int]] = {"batch": {}}
    for spec in specs:
        dynamic = [axis for axis, size in enumerate(spec.shape) if size == -1]
        names = dict(zip(dynamic, spec.dynamic_axes, strict=False))
        names[0] = "batch"  # axis 0 is always the batch, named or not
        for axis, name in names.items():
            sizes.setdefault(name, {})[spec.name] = int(arrays[spec.name].shape[axis])
    return sizes


def _check_tensor(spec: TensorSpec, array: np.ndarray) -> None:
    datatype = datatype_of(array.dtype)
    if datatype != spec.datatype:
        raise InvalidInputError(f"input {spec.name!r} has datatype {datatype}; the model expects {spec.datatype}")
    if array.ndim != len(spec.shape) or any(
        want != -1 and got != want for got, want in zip(array.shape, spec.shape, strict=True)
    ):
        raise InvalidInputError(
            f"input {spec.name!r} has shape {list(array.shape)}; the model expects {list(spec.shape)} (-1: any size)"
        )


async def infer_tensors(
    inference: InferenceService,
    principal: Principal,
    spec: DeploymentSpec,
    arrays: Mapping[str, np.ndarray],
    context: RequestContext | None = None,
) -> TensorResult:
    """Validate, run and bill one request of raw tensors on a deployment (loading it on first use).

    Args:
        inference: The app's inference service (loading and billing).
        principal: The caller, billed for the request.
        spec: The caller's deployment.
        arrays: Input tensors by name.
        context: The request's id and log fields (the edge's); None gives the request a fresh id.

    Returns:
        The outputs, the billed processing time and the usage record's id.

    Raises:
        InvalidInputError: The tensors do not fit the model, or onnxruntime rejected them.
        OverloadedError: The deployment's queue is full.
        RequestCapReachedError, SpendCapReachedError: The tenant is past a monthly cap.
        DeadlineExceededError: No result within the deployment's ``timeout_ms``, queueing included.
        ModelNotReadyError: The deployment's model is no longer installed or cannot be loaded, or the deployment
            is being unloaded (deleted, or evicted for memory).
    """
    entry = inference.entry_for(spec)
    # Tensors run as one batch: the model's bound on a run holds here too (memory per run).
    batch = check_inputs(entry.model, arrays, min(spec.config.max_batch_size, entry.model.max_batch_items))

    async def run(loaded: LoadedDeployment) -> BatchResult:
        # onnxruntime's own errors are translated in cloudeasyml.runtime.session (plain words, no graph internals).
        return await loaded.run_tensors(arrays, batch)

    result, request_id = await inference.execute(principal, spec, entry, batch, run, context)
    return TensorResult(outputs=result.outputs[0], processing_ms=result.processing_ms, request_id=request_id)
