"""How a deployment is served: batching, device, instances, threads (a plugin's defaults, a deployment's choice)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ("MAX_INSTANCES", "MAX_QUEUE_ITEMS", "MAX_TIMEOUT_MS", "Device", "ServingConfig")

Device = Literal["auto", "cpu", "cuda"]

# Maxima of what a tenant may ask for: each multiplies memory or threads held for it (see docs/security.md).
MAX_INSTANCES = 16
MAX_QUEUE_ITEMS = 65_536
MAX_TIMEOUT_MS = 120_000


class ServingConfig(
    msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True, omit_defaults=False, cache_hash=True
):
    """Serving settings of one deployment. A model plugin gives defaults; a deployment may override any field."""

    max_batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    """Most items run together in one onnxruntime call; with several ``instances``, split between them (each
    batch holds at most ``max_batch_size / instances`` items, so that instances take turns)."""
    max_batch_delay_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    """Longest a batch waits for more requests while another batch of the same deployment is running.
    A request that finds the deployment idle runs at once."""
    device: Device = "auto"
    """``auto`` takes CUDA when onnxruntime can use it, else the CPU."""
    instances: Annotated[int, msgspec.Meta(ge=1, le=MAX_INSTANCES)] = 1
    """onnxruntime runs of this deployment that may be in flight side by side, on one shared session. By default
    they share the CPUs' threads between them (``intra_op_threads``). Two instances pipeline: one batch runs
    while the clients of the other are answered, at the cost of fewer threads per request at low load. On the CPU
    at most one per CPU this process may use runs (see ``session_threads``)."""
    intra_op_threads: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0
    """Threads onnxruntime uses inside one operator, clamped to the CPUs this process may use divided by its
    instances. 0: onnxruntime's choice (the physical cores) with one instance; with several, the CPUs split
    between them (see ``session_threads``)."""
    max_queue_items: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUEUE_ITEMS)] = 4096
    """Items waiting beyond which new requests are refused with 503 at once."""
    timeout_ms: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_MS)] = 30_000
    """Deadline of one request, queueing included; past it the caller gets 504."""
    eager_load: bool = False
    """Load the model when the deployment is created rather than on its first request."""
    variant: Literal["float", "optimized", "int8"] = "float"
    """Which graph serves. ``float``: the exported graph, which onnxruntime optimises each time a session
    opens. ``optimized``: that graph with onnxruntime's extended optimisations applied once for the CPU and
    saved (offline mode); sessions open it without optimising again. ``int8``: the weights of MatMul, Gemm,
    Conv and Gather stored as int8 (dynamic quantisation), a quarter of their float size, often faster on
    CPUs, at an accuracy cost that is measured and reported. Both variants run on the CPU (``auto`` picks it for
    them; ``cuda`` is refused), are made on first load or by ``cloudeasyml export --variant``, and are kept
    beside the float graph."""
