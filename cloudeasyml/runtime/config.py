"""How a deployment is served: batching, device, instances, threads."""

from __future__ import annotations

import os
from typing import Annotated, Literal

import msgspec

from cloudeasyml.runtime.machine import available_cpus

__all__ = (
    "MAX_INSTANCES",
    "MAX_QUEUE_ITEMS",
    "MAX_TIMEOUT_MS",
    "Device",
    "ServingConfig",
    "available_cpus",
    "served_instances",
    "session_threads",
)

Device = Literal["auto", "cpu", "cuda"]

# Maxima of what a tenant may ask for: each multiplies memory or threads held for it (see docs/security.md).
MAX_INSTANCES = 16
MAX_QUEUE_ITEMS = 65_536
MAX_TIMEOUT_MS = 120_000


class ServingConfig(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True, omit_defaults=False):
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


def served_instances(config: ServingConfig, cpus: int | None = None) -> int:
    """Instances that run side by side on the CPU: at most one per CPU this process may use (more would only take
    turns on the cores, each holding a batch in memory).
    """
    return min(config.instances, cpus or available_cpus())


def session_threads(config: ServingConfig, cpus: int | None = None) -> int:
    """Intra-op threads of a deployment's session, never more than the CPUs this process may use (``cpus``, by
    default ``available_cpus()``) split between its instances, so that a deployment cannot make onnxruntime start
    more threads than there are cores, and thread counts past the cores (256, 255) name one session, not two.

    An explicit ``intra_op_threads`` is kept up to that share. By default one instance leaves the choice to
    onnxruntime (0), unless the process is confined to fewer CPUs than the machine has (a container's CPU limit or
    affinity mask, which onnxruntime's count of physical cores ignores): then it gets those CPUs. Several instances
    share the CPUs, so that instances running side by side do not oversubscribe the cores (two instances of two
    threads each on two CPUs served MiniLM about 18 % slower than two of one thread each).
    """
    cpus = cpus or available_cpus()
    share = max(1, cpus // served_instances(config, cpus))
    if config.intra_op_threads:
        return min(config.intra_op_threads, share)
    if config.instances > 1:
        return share
    return 0 if cpus >= (os.cpu_count() or cpus) else cpus
