"""Which ONNX file serves a model version: found in the artifact store, or exported on first use."""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np

from cloudeasyml.core.digest import file_digest
from cloudeasyml.errors import ModelNotFoundError, ModelNotReadyError
from cloudeasyml.plugins.model import ModelPlugin, Weights
from cloudeasyml.runtime.artifacts import ArtifactStore

__all__ = ("ArtifactResolver",)

log = logging.getLogger(__name__)

_STORED_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
"""What a trained version can be called (``1.0.0+ft20250101...``). A version is a directory name in the store, so
anything else (a ``/``, ``..``, a name longer than the file system takes) is unknown without touching the disk."""


class ArtifactResolver:
    """Maps ``(model, version)`` to an exported graph, exporting it when allowed and torch is installed."""

    def __init__(self, store: ArtifactStore, *, export_on_load: bool = True) -> None:
        self.store = store
        self._export_on_load = export_on_load
        self._digests: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def versions(self, model: ModelPlugin) -> list[str]:
        """The shipped version first, then trained versions."""
        return [model.version, *self.store.trained_versions(model.name)]

    def weights_digest(self, model: ModelPlugin, version: str) -> str:
        """SHA-256 of the weights of that version (cached: the file never changes under a version)."""
        key = (model.name, version)
        if key not in self._digests:
            if version == model.version:
                self._digests[key] = model.weights_digest()
            else:
                self._digests[key] = file_digest(self._trained_path(model, version))
        return self._digests[key]

    def load_weights(self, model: ModelPlugin, version: str) -> Weights:
        """The weights of a version as arrays."""
        if version == model.version:
            return model.load_weights()
        with np.load(self._trained_path(model, version)) as archive:
            return {key: archive[key] for key in archive.files}

    def check_version(self, model: ModelPlugin, version: str) -> None:
        """``ModelNotFoundError`` unless the version is the shipped one or a trained one in the store."""
        if version != model.version:
            self._trained_path(model, version)

    def find(self, model: ModelPlugin, version: str) -> Path | None:
        """The exported graph of a version, if it exists."""
        path = self.store.onnx_path(model.name, version, self.weights_digest(model, version))
        return path if path.exists() else None

    def export(self, model: ModelPlugin, version: str, *, force: bool = False) -> tuple[Path, dict[str, object]]:
        """Export a version (unless already exported and not ``force``); returns the path and the manifest."""
        from cloudeasyml.runtime.export import export_onnx

        digest = self.weights_digest(model, version)
        path = self.store.onnx_path(model.name, version, digest)
        with self._lock_for(model.name, version):
            if path.exists() and not force:
                return path, self.store.manifest(path) or {}
            weights = self.load_weights(model, version)
            manifest: dict[str, object] = {
                "model": model.name,
                "version": version,
                "weightsSha256": digest,
                "exportedAt": datetime.now(UTC).isoformat(),
            }
            report = self.store.write_export(path, lambda tmp: export_onnx(model, weights, tmp), manifest)
            return path, {**manifest, "export": msgspec.to_builtins(report)}

    def exports_on_load(self) -> bool:
        """Whether a missing graph would be exported on first use here (allowed, and torch installed)."""
        return self._export_on_load and _torch_available()

    def ensure(self, model: ModelPlugin, version: str) -> Path:
        """The graph to serve: found, or exported now when allowed; else ``ModelNotReadyError`` saying what to do."""
        found = self.find(model, version)
        if found is not None:
            return found
        if not self._export_on_load:
            raise ModelNotReadyError(
                f"model {model.name!r} {version} has not been exported; run `cloudeasyml export {model.name}`"
            )
        if not _torch_available():
            raise ModelNotReadyError(
                f"model {model.name!r} {version} has no exported artifact in {self.store.root} and torch is not "
                f"installed here: run `cloudeasyml export {model.name}` where torch is installed "
                f"(pip install 'cloudeasyml[export]') with the same artifact directory"
            )
        log.info("exporting %s %s to ONNX on first load", model.name, version)
        return self.export(model, version)[0]

    def _trained_path(self, model: ModelPlugin, version: str) -> Path:
        if not _STORED_VERSION.fullmatch(version):
            raise ModelNotFoundError(f"model {model.name!r} has no version {version[:100]!r}")
        path = self.store.trained_weights_path(model.name, version)
        if not path.exists():
            raise ModelNotFoundError(f"model {model.name!r} has no version {version!r}")
        return path

    def _lock_for(self, name: str, version: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((name, version), threading.Lock())


def _torch_available() -> bool:
    """Whether torch can be found, without importing it (a broken or blocked install counts as absent)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False
