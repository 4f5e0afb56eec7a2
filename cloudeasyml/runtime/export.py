"""PyTorch → ONNX export with a parity check. The only runtime module that imports torch (lazily)."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from cloudeasyml.errors import ExportError, ParityError

if TYPE_CHECKING:
    from cloudeasyml.plugins.model import ModelPlugin, Weights

__all__ = ("ExportReport", "export_onnx", "torch_outputs")

PARITY_RANDOM_BATCH = 8


class ExportReport(msgspec.Struct, frozen=True, rename="camel"):
    """What an export measured."""

    opset: int
    parity_error_examples: float
    """``model.parity_error`` between torch and onnxruntime on the model's example inputs."""
    parity_error_random: float
    """The same on a random batch of ``PARITY_RANDOM_BATCH`` items."""
    parity_tolerance: float
    export_seconds: float
    size_bytes: int


def _example_batch(model: ModelPlugin) -> dict[str, np.ndarray]:
    examples = list(model.example_inputs())
    # torch.export specialises axes whose example size is 0 or 1, so give every dynamic axis two or more.
    while len(examples) < 2:
        examples = examples * 2
    return model.to_arrays(examples)


def torch_outputs(model: ModelPlugin, module: object, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the torch module on named arrays and name its outputs as the graph does."""
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(arrays[spec.name])) for spec in model.input_tensors)
    with torch.inference_mode():
        result = module(*args)  # type: ignore[operator]
    if isinstance(result, torch.Tensor):
        result = (result,)
    return {spec.name: t.detach().cpu().numpy() for spec, t in zip(model.output_tensors, result, strict=True)}


def _dynamic_shapes(model: ModelPlugin) -> tuple[dict[int, object], ...]:
    import torch

    dims: dict[str, object] = {}
    shapes = []
    for spec in model.input_tensors:
        names = iter(spec.dynamic_axes)
        axes = {}
        for axis, size in enumerate(spec.shape):
            if size == -1:
                name = next(names, f"{spec.name}_axis{axis}")
                axes[axis] = dims.setdefault(name, torch.export.Dim(name, min=1, max=1 << 20))
        shapes.append(axes)
    return tuple(shapes)


@contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Silence torch's exporter chatter (e.g. "torchvision is not installed") below errors while exporting."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(model: ModelPlugin, weights: Weights, path: Path) -> ExportReport:
    """Export ``model`` loaded with ``weights`` to ``path`` and check it against torch.

    Raises:
        ExportError: torch or onnx is missing, or the exporter failed.
        ParityError: onnxruntime's outputs differ from torch's by more than ``model.parity_tolerance``;
            the file is removed, so a refused model is never served.
    """
    try:
        import onnx
        import torch
    except ImportError as exc:
        raise ExportError(
            f"exporting {model.name!r} needs torch and onnx: pip install 'cloudeasyml[export]' "
            f"(or copy an exported artifact into the artifact store)"
        ) from exc
    from cloudeasyml.runtime.session import open_session

    started = time.perf_counter()
    module = model.build_module(weights)
    example = _example_batch(model)
    args = tuple(torch.from_numpy(example[spec.name]) for spec in model.input_tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), _quiet_torch_logs():
            # torch's own deprecations and notes about axis names it merged: not the user's to act on.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name", category=UserWarning)
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=[spec.name for spec in model.input_tensors],
                output_names=[spec.name for spec in model.output_tensors],
                opset_version=model.opset,
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(model),
                external_data=False,
                verbose=False,
            )
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # the exporter raises many types; all mean the same to the caller
        path.unlink(missing_ok=True)
        raise ExportError(f"exporting {model.name!r} failed: {exc}") from exc

    session = open_session(path, device="cpu")
    errors = []
    rng = np.random.default_rng(0)
    for batch in (example, model.random_arrays(rng, PARITY_RANDOM_BATCH)):
        expected = torch_outputs(model, module, batch)
        actual = session.run(batch)
        errors.append(model.parity_error(expected, actual))
    if not all(error <= model.parity_tolerance for error in errors):
        path.unlink(missing_ok=True)
        raise ParityError(
            f"{model.name!r} failed the parity check: onnxruntime differs from torch by "
            f"{max(errors):.3g} (tolerance {model.parity_tolerance:g}); the export was discarded"
        )
    return ExportReport(
        opset=model.opset,
        parity_error_examples=errors[0],
        parity_error_random=errors[1],
        parity_tolerance=model.parity_tolerance,
        export_seconds=round(time.perf_counter() - started, 3),
        size_bytes=path.stat().st_size,
    )
