"""Serving variants of an exported graph: optimised offline, or with int8 weights, and what each changes.

Layout, beside the float graph in its artifact directory::

    model.onnx              the exported float graph (export.py)
    model.optimized.onnx    onnxruntime's extended graph optimisations for the CPU, applied once and saved
    model.optimized.json    its VariantReport
    model.int8.onnx         dynamic int8 quantisation of the weights (onnxruntime.quantization)
    model.int8.json         its VariantReport

A variant is made once and reused while the float graph it was made from (recorded by SHA-256) stays the
same. Both files are written under temporary names and renamed into place, the report last, so a report on
disk always describes the graph beside it. Variants run on the CPU: the offline-optimised graph holds
fusions chosen for the CPU execution provider, and dynamic quantisation's integer kernels are CPU kernels.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
import numpy as np
import onnxruntime as ort

from cloudeasyml.core.digest import file_digest
from cloudeasyml.core.serving import Device
from cloudeasyml.errors import ExportError, ModelNotReadyError
from cloudeasyml.runtime.session import OnnxSession, open_session

if TYPE_CHECKING:
    from cloudeasyml.plugins.model import ModelPlugin

__all__ = (
    "VariantKind",
    "VariantReport",
    "ensure_variant",
    "measure",
    "open_for_serving",
    "open_variant_session",
    "report_path",
    "variant_path",
)

VariantKind = Literal["optimized", "int8"]
"""The variants this module makes (``float`` is the exported graph itself)."""

RANDOM_BATCH = 32
"""Items in the random batch accuracy is measured on (``model.random_arrays``, seed 0), and in the batch of
repeated example inputs latency is measured on."""
LATENCY_RUNS = 5
"""Timed runs per measurement, after one warm-up run; the median is reported."""

_CPU = ["CPUExecutionProvider"]
_QUANTIZED_SUFFIX = "_quantized"
"""How onnxruntime's quantizer names a weight it stored as 8-bit integers."""


class VariantReport(msgspec.Struct, frozen=True, rename="camel"):
    """What making a variant measured, against the float graph it was made from."""

    variant: str
    float_sha256: str
    """SHA-256 of the float graph the variant was made from; a different float graph makes it again."""
    onnxruntime_version: str
    build_seconds: float
    float_size_bytes: int
    variant_size_bytes: int
    quantized_weights: int
    """Weight tensors stored as 8-bit integers (0 for ``optimized``, or where nothing could be quantised)."""
    parity_error_examples: float
    """``model.parity_error(float outputs, variant outputs)`` on the model's example inputs."""
    parity_error_random: float
    """The same on ``model.random_arrays`` of ``RANDOM_BATCH`` items, seed 0."""
    relative_error_examples: float
    """Largest absolute difference over the largest absolute float output, on the example inputs."""
    relative_error_random: float
    """The same on the random batch."""
    float_load_ms: float
    """Opening a CPU session on the float graph (onnxruntime optimises it then), the faster of two."""
    variant_load_ms: float
    """The same for the variant."""
    float_latency_ms_batch1: float
    """Median CPU run time of the float graph on the first example input."""
    float_latency_ms_batch32: float
    """Median CPU run time of the float graph on ``RANDOM_BATCH`` items cycling through the example inputs."""
    variant_latency_ms_batch1: float
    """The same for the variant."""
    variant_latency_ms_batch32: float
    """The same for the variant."""
    note: str | None = None
    """Why the variant may not help this model, when that is known."""


def variant_path(float_path: Path, kind: VariantKind) -> Path:
    """Where the ``kind`` variant of the float graph at ``float_path`` lives (whether or not it exists yet)."""
    return float_path.with_name(f"{float_path.stem}.{kind}.onnx")


def report_path(float_path: Path, kind: VariantKind) -> Path:
    """Where the report of that variant lives."""
    return variant_path(float_path, kind).with_suffix(".json")


def open_variant_session(path: Path, kind: VariantKind, *, intra_op_threads: int = 0) -> OnnxSession:
    """Open a variant on the CPU.

    The offline-optimised graph is loaded with graph optimisation disabled: it was done when the file was
    made, which is the point of it.
    """
    return open_session(path, device="cpu", intra_op_threads=intra_op_threads, optimize_graph=kind != "optimized")


def open_for_serving(path: Path, variant: str, *, device: Device, intra_op_threads: int) -> OnnxSession:
    """The session a deployment serves from: the float graph on ``device``, or a variant on the CPU."""
    if variant == "float":
        return open_session(path, device=device, intra_op_threads=intra_op_threads)
    return open_variant_session(path, variant, intra_op_threads=intra_op_threads)  # type: ignore[arg-type]


# --- making and caching ------------------------------------------------------------------------------

_locks: dict[Path, threading.Lock] = {}
_guard = threading.Lock()


def ensure_variant(
    model: ModelPlugin, float_path: Path, kind: VariantKind, *, force: bool = False
) -> tuple[Path, VariantReport]:
    """The ``kind`` variant of ``float_path`` and its report, made and measured on first use.

    A variant made from this float graph is reused; otherwise it is made, measured and stored now (once,
    however many threads ask at the same time).

    Raises:
        ModelNotReadyError: the variant cannot be made here (``onnx`` missing, artifact directory not writable).
        ExportError: onnxruntime failed to make it.
    """
    target = variant_path(float_path, kind)
    with _lock_for(target):
        digest = file_digest(float_path)
        cached = None if force else _cached_report(float_path, kind, digest)
        if cached is not None:
            return target, cached
        return target, _make(model, float_path, kind, digest)


def _lock_for(path: Path) -> threading.Lock:
    with _guard:
        return _locks.setdefault(path, threading.Lock())


def _cached_report(float_path: Path, kind: VariantKind, digest: str) -> VariantReport | None:
    path = report_path(float_path, kind)
    if not (path.exists() and variant_path(float_path, kind).exists()):
        return None
    try:
        report = msgspec.json.decode(path.read_bytes(), type=VariantReport)
    except msgspec.DecodeError:  # written by another release of this module: make it again
        return None
    return report if report.float_sha256 == digest and report.variant == kind else None


def _make(model: ModelPlugin, float_path: Path, kind: VariantKind, digest: str) -> VariantReport:
    build: Callable[[Path, Path], int] = _build_int8 if kind == "int8" else _build_optimized
    try:
        with tempfile.TemporaryDirectory(dir=float_path.parent, prefix=f".{kind}-") as scratch:
            tmp = Path(scratch) / variant_path(float_path, kind).name
            started = time.perf_counter()
            quantized = build(float_path, tmp)
            build_seconds = round(time.perf_counter() - started, 3)
            report = measure(
                model, float_path, tmp, kind, digest=digest, quantized_weights=quantized, build_seconds=build_seconds
            )
            os.replace(tmp, variant_path(float_path, kind))
            tmp_report = Path(scratch) / "report.json"
            tmp_report.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
            os.replace(tmp_report, report_path(float_path, kind))
    except OSError as exc:  # a read-only or full artifact directory
        raise ModelNotReadyError(
            f"cannot write the {kind} variant of {model.name!r} beside {float_path}: {exc.strerror}; run "
            f"`cloudeasyml export {model.name} --variant {kind}` where the artifact directory is writable"
        ) from exc
    return report


def _build_optimized(source: Path, target: Path) -> int:
    """Optimise offline: open a CPU session with extended optimisations and have onnxruntime save its graph."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    try:
        ort.InferenceSession(str(source), sess_options=options, providers=_CPU)
    except Exception as exc:  # onnxruntime raises several types; all mean the graph could not be optimised
        raise ExportError(f"optimising {source} failed: {exc}") from exc
    return 0


def _build_int8(source: Path, target: Path) -> int:
    """Dynamic quantisation: int8 weights, activations quantised per run. Returns the weights quantised.

    Weights get one scale per output channel and 7-bit range (``per_channel``, ``reduce_range``): on CPUs
    without VNNI, onnxruntime's u8 x s8 kernels saturate with full-range weights. On an AVX2 machine,
    per-tensor full-range weights gave housing 25x and MiniLM 3-7x the error of this setting.

    The exporter's ``value_info`` shape annotations are dropped first: the quantizer rewrites Gemm as MatMul
    on the transposed weight and re-infers shapes, which a stale annotation of that weight contradicts.
    (``quant_pre_process`` is not used: its symbolic shape inference gives up on the exported MiniLM, and
    without it the stale annotation fails housing.)
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelNotReadyError(
            "making an int8 variant needs the onnx package: pip install 'cloudeasyml[export]' here, or run "
            "`cloudeasyml export MODEL --variant int8` where it is installed, with the same artifact directory"
        ) from exc
    graph = onnx.load(str(source))
    del graph.graph.value_info[:]
    try:
        quantize_dynamic(graph, target, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    except Exception as exc:  # the quantizer raises many types; all mean the same to the caller
        raise ExportError(f"quantising {source} to int8 failed: {exc}") from exc
    quantized = onnx.load(str(target))
    return sum(t.name.endswith(_QUANTIZED_SUFFIX) for t in quantized.graph.initializer)


# --- measuring ---------------------------------------------------------------------------------------


def measure(
    model: ModelPlugin,
    float_path: Path,
    path: Path,
    kind: VariantKind,
    *,
    digest: str,
    quantized_weights: int = 0,
    build_seconds: float = 0.0,
) -> VariantReport:
    """Compare the variant with the float graph and time both.

    Both run on the example inputs and on a random batch, and their outputs are compared; opening each, and
    running each on one example and on ``RANDOM_BATCH`` examples, are timed on the CPU.
    """
    examples = model.to_arrays(model.example_inputs())
    random = model.random_arrays(np.random.default_rng(0), RANDOM_BATCH)
    float_session, float_load_ms = _timed_open(lambda: open_session(float_path, device="cpu"))
    variant_session, variant_load_ms = _timed_open(lambda: open_variant_session(path, kind))
    errors = [_errors(model, float_session.run(batch), variant_session.run(batch)) for batch in (examples, random)]
    sessions = (float_session, variant_session)
    batch1 = _latencies_ms(sessions, _repeated_examples(model, 1))
    batch32 = _latencies_ms(sessions, _repeated_examples(model, RANDOM_BATCH))
    return VariantReport(
        variant=kind,
        float_sha256=digest,
        onnxruntime_version=ort.__version__,
        build_seconds=build_seconds,
        float_size_bytes=float_path.stat().st_size,
        variant_size_bytes=path.stat().st_size,
        quantized_weights=quantized_weights,
        parity_error_examples=errors[0][0],
        parity_error_random=errors[1][0],
        relative_error_examples=errors[0][1],
        relative_error_random=errors[1][1],
        float_load_ms=float_load_ms,
        variant_load_ms=variant_load_ms,
        float_latency_ms_batch1=batch1[0],
        float_latency_ms_batch32=batch32[0],
        variant_latency_ms_batch1=batch1[1],
        variant_latency_ms_batch32=batch32[1],
        note=_note(kind, quantized_weights),
    )


def _timed_open(opener: Callable[[], OnnxSession]) -> tuple[OnnxSession, float]:
    """The session and the faster of two openings, in ms (the first may pay for reading the file)."""
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        session = opener()
        timings.append((time.perf_counter() - started) * 1000)
    return session, round(min(timings), 3)


def _repeated_examples(model: ModelPlugin, size: int) -> dict[str, np.ndarray]:
    """``size`` items cycling through the example inputs: what a served batch of ordinary requests looks like."""
    examples = model.example_inputs()
    return model.to_arrays([examples[i % len(examples)] for i in range(size)])


def _latencies_ms(sessions: tuple[OnnxSession, ...], arrays: Mapping[str, np.ndarray]) -> list[float]:
    """Median run time of each session in ms, after a warm-up run.

    Runs alternate between the sessions, so that a busy machine slows them alike.
    """
    for session in sessions:
        session.run(arrays)
    runs: list[list[float]] = [[] for _ in sessions]
    for _ in range(LATENCY_RUNS):
        for session, timings in zip(sessions, runs, strict=True):
            started = time.perf_counter()
            session.run(arrays)
            timings.append((time.perf_counter() - started) * 1000)
    return [round(statistics.median(timings), 3) for timings in runs]


def _errors(
    model: ModelPlugin, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]
) -> tuple[float, float]:
    """``model.parity_error`` and the relative error: max abs difference over max abs float value."""
    relative = 0.0
    for name, reference in expected.items():
        reference = reference.astype(np.float64)
        scale = float(np.max(np.abs(reference), initial=0.0)) or 1.0
        relative = max(relative, float(np.max(np.abs(reference - actual[name]), initial=0.0)) / scale)
    return float(model.parity_error(expected, actual)), relative


def _note(kind: VariantKind, quantized_weights: int) -> str | None:
    if kind == "int8" and quantized_weights == 0:
        return "no MatMul, Gemm, Conv or Gather weights could be quantised: the int8 graph computes as the float one"
    return None
