"""Training a model into a new version: train, store the weights, export and parity-check the new graph."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import msgspec

from cloudeasyml.errors import InvalidInputError
from cloudeasyml.plugins.model import ModelPlugin, TrainOptions, TrainProgress
from cloudeasyml.runtime.resolver import ArtifactResolver

__all__ = ("TrainedVersion", "train_new_version")

METRICS_NAME = "training.json"


class TrainedVersion(msgspec.Struct, frozen=True, rename="camel"):
    """A version produced by training."""

    model: str
    version: str
    metrics: dict[str, float]
    onnx_path: str
    export: dict[str, object]


def _new_version(model: ModelPlugin) -> str:
    # A PEP 440 local version: sorts after the shipped one, says where it came from.
    return f"{model.version}+ft{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"


def train_new_version(
    model: ModelPlugin,
    resolver: ArtifactResolver,
    data: Path,
    options: TrainOptions,
    progress: TrainProgress | None = None,
) -> TrainedVersion:
    """Train ``model`` on ``data``, store the weights as a new version, export it (parity-checked).

    The shipped version and earlier trained versions are untouched, so deployments on them keep serving.
    A version whose export fails its parity check is removed again.

    Raises:
        InvalidInputError: the data file is missing or the plugin rejected it (its ``ValueError``).
        NotImplementedError: the model does not support training.
    """
    if not data.is_file():
        raise InvalidInputError(f"no data file at {data}")
    try:
        result = model.train(data, options, progress)
    except ValueError as exc:
        raise InvalidInputError(f"{model.name} cannot train on {data}: {exc}") from exc
    version = _new_version(model)
    weights_path = resolver.store.save_trained_weights(model.name, version, result.weights)
    try:
        onnx_path, manifest = resolver.export(model, version)
    except Exception:
        shutil.rmtree(weights_path.parent, ignore_errors=True)
        raise
    trained = TrainedVersion(
        model=model.name,
        version=version,
        metrics={k: float(v) for k, v in result.metrics.items()},
        onnx_path=str(onnx_path),
        export=dict(cast("dict[str, object]", manifest.get("export", {}))),
    )
    (weights_path.parent / METRICS_NAME).write_bytes(msgspec.json.encode(trained))
    return trained
