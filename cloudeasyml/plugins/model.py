"""The base class every model plugin subclasses.

A plugin says what its model is (metadata, tensors, pricing, serving defaults), how to build its torch module
from weights, and how JSON inputs become named arrays and ONNX outputs become predictions. The host owns
everything else: export to ONNX, parity checks, the artifact store, onnxruntime sessions and batching.
torch is imported only by ``build_module`` and ``train``; serving an exported model never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar

import msgspec
import numpy as np

from cloudeasyml.core.digest import file_digest
from cloudeasyml.core.pricing import Pricing
from cloudeasyml.core.quality import QualityMetric
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.tensors import TensorSpec

if TYPE_CHECKING:
    import torch

__all__ = ("ModelPlugin", "TrainOptions", "TrainProgress", "TrainResult", "Weights")

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

Weights = dict[str, np.ndarray]
"""A model's parameters by name: a torch ``state_dict`` as numpy arrays."""

TrainProgress = Callable[[int, int, Mapping[str, float]], None]
"""Called as ``progress(step, total_steps, metrics)`` while training."""


class TrainOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Options of one training run (validated when built with ``msgspec.convert``; the CLI checks the same bounds)."""

    epochs: Annotated[int, msgspec.Meta(ge=1)] = 20
    learning_rate: Annotated[float, msgspec.Meta(gt=0)] = 1e-3
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 32
    seed: int = 0
    validation_fraction: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.2


class TrainResult(msgspec.Struct, kw_only=True):
    """What training produced: held-out metrics and the new weights."""

    metrics: dict[str, float]
    weights: Weights


class ModelPlugin(Generic[InputT, OutputT]):
    """One servable model. Subclass it, set the class attributes, implement the four abstract methods.

    Required overrides: ``example_inputs``, ``build_module``, ``to_arrays``, ``from_outputs``.
    Optional: ``train``, ``random_arrays``, ``parity_error``, ``weights_path``, ``load_weights``.
    """

    name: ClassVar[str]
    """Unique across installed plugins; what clients pass as ``modelName``."""
    version: ClassVar[str]
    """The version of the shipped weights and code (PEP 440)."""
    description: ClassVar[str] = ""
    task: ClassVar[str] = "custom"
    """What the model does: ``regression``, ``text-classification``, ``embedding``, ..."""
    input_type: ClassVar[Any]
    """The type of one element of a predict request's ``inputs`` (a msgspec Struct, ``str``, ...)."""
    output_type: ClassVar[Any]
    """The type of one prediction (a msgspec Struct, ``list[float]``, ...)."""
    input_tensors: ClassVar[tuple[TensorSpec, ...]]
    output_tensors: ClassVar[tuple[TensorSpec, ...]]
    pricing: ClassVar[Pricing] = Pricing()
    serving: ClassVar[ServingConfig] = ServingConfig()
    opset: ClassVar[int] = 18
    """ONNX opset the host exports with."""
    parity_tolerance: ClassVar[float] = 1e-4
    """Largest ``parity_error`` between torch and onnxruntime that export accepts."""
    weights_resource: ClassVar[str] = "weights.npz"
    """File of shipped weights inside the plugin's package (see ``weights_path``)."""
    max_items_per_request: ClassVar[int] = 256
    """Most inputs one request may carry: past it the request is refused (422) before anything runs. A request
    with more inputs than a deployment's batch runs as several batches, billed as one request."""
    max_batch_items: ClassVar[int] = 256
    """Most inputs of one onnxruntime run, whatever a deployment's ``maxBatchSize`` says: it bounds the memory
    of a run (for text models, with ``max_tokens_per_item``). Set it from a measurement of the worst batch."""
    max_characters_per_item: ClassVar[int | None] = None
    """Text models: the longest text one input may hold (422 past it); the input type should say the same
    (``msgspec.Meta(max_length=...)``). None for models without text inputs."""
    max_tokens_per_item: ClassVar[int | None] = None
    """Text models: tokens kept of one input (longer inputs are truncated), at most the model's maximum sequence
    length. None for models without text inputs."""
    quality_metric: ClassVar[QualityMetric | None] = None
    """How the experiment report scores this model's answers against ``POST /feedback`` (``QualityMetric.accuracy``
    for classifiers, ``.regression`` for regressors, ``.score`` with ``quality_score`` otherwise); None: the report
    shows traffic, errors, latency and cost, and no quality."""

    # --- weights -------------------------------------------------------------------------------------
    def weights_path(self) -> Path:
        """Where the shipped weights lie: ``weights_resource`` inside the plugin's top-level package."""
        package = type(self).__module__.split(".")[0]
        return Path(str(files(package) / self.weights_resource))

    def load_weights(self) -> Weights:
        """The shipped weights as arrays (``.npz`` by default)."""
        with np.load(self.weights_path()) as archive:
            return {key: archive[key] for key in archive.files}

    def weights_digest(self) -> str:
        """SHA-256 of the shipped weights file: part of the artifact key, computed without torch."""
        return file_digest(self.weights_path())

    # --- what plugins implement ------------------------------------------------------------------------
    def example_inputs(self) -> list[InputT]:
        """Valid inputs for export, warm-up and docs; the first is published as ``exampleInput``."""
        raise NotImplementedError

    def build_module(self, weights: Weights) -> torch.nn.Module:
        """The torch module in eval mode, loaded with ``weights``. Its forward takes the input tensors in
        ``input_tensors`` order and returns the output tensors in ``output_tensors`` order.
        """
        raise NotImplementedError

    def to_arrays(self, items: list[InputT]) -> dict[str, np.ndarray]:
        """Turn a batch of decoded inputs into the graph's named input arrays (axis 0 = item)."""
        raise NotImplementedError

    def from_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[OutputT]:
        """Turn the graph's named output arrays for a batch back into one prediction per item."""
        raise NotImplementedError

    def train(self, data: Path, options: TrainOptions, progress: TrainProgress | None = None) -> TrainResult:
        """Train on the data file at ``data`` (from the shipped weights or from scratch, as the plugin documents);
        return held-out metrics and the new weights.
        """
        raise NotImplementedError(f"model {self.name!r} does not support training")

    # --- optional overrides --------------------------------------------------------------------------
    def cost_units(self, items: list[InputT]) -> int:
        """The size of a batch in the units its run time grows with, from which the host estimates how long a
        batch runs (and so whether it may run on the event loop). The default counts the characters of ``str``
        inputs and 1 for any other input; override it when an input's cost varies otherwise (e.g. the
        characters of a text field). It runs on the event loop for every request: keep it cheap.
        """
        return sum(len(item) if isinstance(item, str) else 1 for item in items)

    def random_arrays(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """A random batch for the export parity check. The default repeats the example inputs to
        ``batch_size`` rows and adds noise to floating-point tensors; override it when float columns hold
        integers or flags, or when a random batch should exercise padding.
        """
        base = self.to_arrays(self.example_inputs())
        rows = rng.integers(0, len(self.example_inputs()), size=batch_size)
        batch = {}
        for key, array in base.items():
            picked = array[rows]
            if np.issubdtype(picked.dtype, np.floating):
                picked = (picked + rng.normal(0, 0.1, size=picked.shape) * (np.abs(picked) + 1)).astype(array.dtype)
            batch[key] = picked
        return batch

    def quality_score(self, prediction: Any, truth: Any) -> float:
        """A ``score`` metric's value for one answered item (``prediction`` as the client received it, as plain JSON
        values; ``truth`` the feedback's ``label`` or ``value`` for it). Needed only with ``QualityMetric.score``.
        """
        raise NotImplementedError(f"model {self.name!r} declares no quality_score")

    def parity_error(self, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> float:
        """How far onnxruntime's outputs are from torch's: the largest absolute difference by default."""
        return max(float(np.max(np.abs(expected[k].astype(np.float64) - actual[k]))) for k in expected)
