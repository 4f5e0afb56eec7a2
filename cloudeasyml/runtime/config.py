"""What a deployment's serving config means on this machine: instances and threads for the CPUs at hand."""

from __future__ import annotations

import os

from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.runtime.machine import available_cpus

__all__ = ("available_cpus", "served_instances", "session_threads")


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
