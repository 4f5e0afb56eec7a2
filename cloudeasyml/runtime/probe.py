"""Whether onnxruntime can really run on CUDA here: a session opened on a one-node graph says which provider it got.

``onnxruntime.get_available_providers()`` lists what the build was compiled with, not what loads: the GPU build
lists ``CUDAExecutionProvider`` on machines without a GPU or without the CUDA and cuDNN libraries it needs, and a
session asked for it then quietly runs on the CPU. Only the session's own ``get_providers()`` tells.
"""

from __future__ import annotations

import base64

import msgspec
import onnxruntime as ort

__all__ = ("PROBE_GRAPH", "ProviderReport", "probe_providers")

PROBE_GRAPH = base64.b64decode(
    "CAgSEmNsb3VkZWFzeW1sLWRvY3Rvcjo7ChAKAXgSAXkiCElkZW50aXR5EgVwcm9iZVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEA0="
)
"""An ONNX model of one ``Identity`` node, ``x`` float[1] to ``y`` (opset 13, 89 bytes): written here so that the
probe needs neither onnx nor torch (tests/unit/test_probe.py rebuilds it with ``onnx.helper``)."""

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


class ProviderReport(msgspec.Struct, frozen=True):
    """What onnxruntime offers and what a session asked for CUDA really got."""

    version: str
    available: tuple[str, ...]
    """What this onnxruntime build lists."""
    cuda_listed: bool
    cuda_loads: bool
    """A session asked for CUDA got it (its first provider is CUDA)."""
    session_providers: tuple[str, ...]
    """The probe session's providers: ``()`` when CUDA is not listed (no session was opened)."""
    error: str | None = None
    """Why the session could not be opened at all, if it could not."""


def probe_providers() -> ProviderReport:
    """Open a session on ``PROBE_GRAPH`` with CUDA first (when listed) and report what it got."""
    available = tuple(ort.get_available_providers())
    listed = _CUDA in available
    if not listed:
        return ProviderReport(ort.__version__, available, False, False, ())
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the fallback's reason is onnxruntime's own log line
    try:
        session = ort.InferenceSession(PROBE_GRAPH, options, providers=[_CUDA, _CPU])
    except Exception as exc:  # onnxruntime raises its own exception types; any of them means no session
        return ProviderReport(ort.__version__, available, True, False, (), error=f"{type(exc).__name__}: {exc}")
    providers = tuple(session.get_providers())
    return ProviderReport(ort.__version__, available, True, bool(providers) and providers[0] == _CUDA, providers)
