"""onnxruntime sessions: providers by device, thread counts, named inputs and outputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from cloudeasyml.core.serving import Device
from cloudeasyml.errors import InvalidInputError

__all__ = ("OnnxSession", "open_session", "providers_for")

log = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


_cuda_failed = False
"""Set once a session asked for CUDA and got the CPU: ``auto`` then stops asking (and logging) for it."""


def providers_for(device: Device) -> list[str]:
    """Execution providers to ask for. ``auto`` asks for CUDA when this onnxruntime build lists it, until it
    has failed once; ``get_available_providers`` lists CUDA even where its libraries cannot load, so the
    session's own ``get_providers`` is the truth.
    """
    if device == "cpu" or (device == "auto" and _cuda_failed):
        return [_CPU]
    if device == "cuda" or _CUDA in ort.get_available_providers():
        return [_CUDA, _CPU]
    return [_CPU]


class OnnxSession:
    """One onnxruntime ``InferenceSession``. ``run`` is safe to call from several threads at once."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.output_names = tuple(o.name for o in session.get_outputs())
        self.providers = tuple(session.get_providers())

    @property
    def on_gpu(self) -> bool:
        """Whether the session really runs on CUDA (not just asked to)."""
        return self.providers[0] == _CUDA

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on named input arrays; return named outputs.

        Raises:
            InvalidInputError: onnxruntime refused the inputs (wrong datatype or rank), or failed on their values
                or sizes (an index past an embedding table, a sequence longer than the model's). The message is
                plain: onnxruntime's own names graph nodes, which are no business of a client; it is logged.
        """
        feeds = {name: arrays[name] for name in self.input_names}
        try:
            outputs = self._session.run(None, feeds)
        except InvalidArgument as exc:
            log.info("onnxruntime refused the inputs: %s", exc)
            raise InvalidInputError("the model rejected the inputs: a datatype or a shape does not fit it") from None
        except (Fail, RuntimeException) as exc:
            if "alloc" in str(exc).lower():
                raise  # out of memory: the server's trouble, not the input's
            log.info("onnxruntime failed on the inputs: %s", exc)
            raise InvalidInputError(
                "the model cannot run on these inputs: a size or a value is outside what it supports"
            ) from None
        return dict(zip(self.output_names, outputs, strict=True))


def open_session(
    path: Path, *, device: Device = "auto", intra_op_threads: int = 0, optimize_graph: bool = True
) -> OnnxSession:
    """Open ``path`` on ``device``. Asking for ``cuda`` where it cannot load falls back to the CPU with a warning.
    ``optimize_graph=False`` loads a graph that was optimised offline as it is.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    if not optimize_graph:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # Idle intra-op threads would otherwise spin, taking CPU from the event loop on small machines.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    global _cuda_failed
    providers = providers_for(device)
    if _CUDA in providers:
        # A failed CUDA load prints two error lines from onnxruntime's global logger; say it once, our way.
        ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    finally:
        ort.set_default_logger_severity(2)
    wrapped = OnnxSession(session)
    if _CUDA in providers and not wrapped.on_gpu:
        if not _cuda_failed:
            log.warning("onnxruntime could not load CUDA (drivers or libraries missing); running on CPU")
        _cuda_failed = True
    return wrapped
