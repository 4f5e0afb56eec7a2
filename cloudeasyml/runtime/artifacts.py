"""The artifact store: exported ONNX files and trained weights on a directory that pods may share.

Layout::

    <root>/<model>/<version>/weights.npz               trained versions only (shipped weights live in the wheel)
    <root>/<model>/<version>/<digest[:16]>/model.onnx  the exported graph for those exact weights
    <root>/<model>/<version>/<digest[:16]>/manifest.json

Files are written to a temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

__all__ = ("ArtifactStore",)

ONNX_NAME = "model.onnx"
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.npz"


class ArtifactStore:
    """A directory of exported models and trained weights, keyed by model name, version and weights hash."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def onnx_path(self, model: str, version: str, digest: str) -> Path:
        """Where the graph for these weights lives (whether or not it exists yet)."""
        return self.root / model / version / digest[:16] / ONNX_NAME

    def manifest(self, onnx_path: Path) -> dict[str, object] | None:
        """The manifest written beside an exported graph, if any."""
        path = onnx_path.with_name(MANIFEST_NAME)
        return msgspec.json.decode(path.read_bytes()) if path.exists() else None

    def write_export(self, onnx_path: Path, produce: Callable[[Path], object], manifest: dict[str, object]) -> object:
        """Run ``produce(tmp_path)`` to write a graph, then move it and its manifest into place atomically."""
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=onnx_path.parent) as scratch:
            tmp = Path(scratch) / ONNX_NAME
            result = produce(tmp)
            manifest_bytes = msgspec.json.encode({**manifest, "export": result})
            _atomic_write(onnx_path.with_name(MANIFEST_NAME), manifest_bytes)
            os.replace(tmp, onnx_path)
        return result

    def trained_weights_path(self, model: str, version: str) -> Path:
        """Where a trained version's weights live."""
        return self.root / model / version / WEIGHTS_NAME

    def save_trained_weights(self, model: str, version: str, weights: dict[str, np.ndarray]) -> Path:
        """Store a trained version's weights; refuses to overwrite an existing version."""
        path = self.trained_weights_path(model, version)
        if path.exists():
            raise FileExistsError(f"{model} {version} already exists in the artifact store")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
            # numpy's stub types **kwds as if one could be its allow_pickle flag (bool); these are arrays by name.
            np.savez(handle, **weights)  # type: ignore[arg-type]
        os.replace(handle.name, path)
        return path

    def trained_versions(self, model: str) -> list[str]:
        """Versions of ``model`` produced by training, oldest first."""
        base = self.root / model
        if not base.is_dir():
            return []
        found = [p.parent for p in base.glob(f"*/{WEIGHTS_NAME}")]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime)]


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)
