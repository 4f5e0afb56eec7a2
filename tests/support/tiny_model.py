"""A tiny but real model for the platform's tests: a 2→4→1 MLP with fixed weights, exported like any plugin."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np

from cloudeasyml import ModelPlugin, Pricing, ServingConfig, TensorSpec, hookimpl

WEIGHTS = Path(__file__).with_name("tiny_weights.npz")


class Point(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """One input."""

    x: Annotated[float, msgspec.Meta(ge=-1000, le=1000)]
    y: Annotated[float, msgspec.Meta(ge=-1000, le=1000)]


class Score(msgspec.Struct, rename="camel"):
    """One output."""

    score: float


def tiny_weights() -> dict[str, np.ndarray]:
    """Deterministic weights (what ``tiny_weights.npz`` holds)."""
    rng = np.random.default_rng(7)
    return {
        "0.weight": rng.normal(size=(4, 2)).astype(np.float32),
        "0.bias": rng.normal(size=(4,)).astype(np.float32),
        "2.weight": rng.normal(size=(1, 4)).astype(np.float32),
        "2.bias": rng.normal(size=(1,)).astype(np.float32),
    }


def numpy_forward(weights: Mapping[str, np.ndarray], points: np.ndarray) -> np.ndarray:
    """The same network in numpy, to check served predictions independently of torch and onnxruntime."""
    hidden = np.maximum(points @ weights["0.weight"].T + weights["0.bias"], 0)
    return (hidden @ weights["2.weight"].T + weights["2.bias"])[:, 0]


class TinyModel(ModelPlugin[Point, Score]):
    """Scores a point: a two-layer perceptron."""

    name = "tiny"
    version = "1.0.0"
    task = "regression"
    input_type = Point
    output_type = Score
    input_tensors = (TensorSpec("points", "FP32", (-1, 2), ("batch",)),)
    output_tensors = (TensorSpec("score", "FP32", (-1, 1), ("batch",)),)
    pricing = Pricing(per_request=Decimal("0.001"), per_second=Decimal("0.5"))
    serving = ServingConfig(max_batch_size=16)

    def weights_path(self) -> Path:
        return WEIGHTS

    def example_inputs(self) -> list[Point]:
        return [Point(x=1.0, y=2.0), Point(x=-0.5, y=0.25)]

    def build_module(self, weights):  # type: ignore[no-untyped-def]
        import torch

        module = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        return module.eval()

    def to_arrays(self, items: list[Point]) -> dict[str, np.ndarray]:
        return {"points": np.array([[p.x, p.y] for p in items], dtype=np.float32)}

    def from_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[Score]:
        return [Score(score=float(v)) for v in outputs["score"][:, 0]]


@hookimpl
def cloudeasyml_register_models(register):  # type: ignore[no-untyped-def]
    """Register the tiny model."""
    register(TinyModel())
