"""What this process may use of the machine: CPUs (affinity mask, cgroup CPU quota) and memory (cgroup memory limit,
else physical memory). Containers narrow both; reading them sizes thread pools and memory budgets for the container
rather than for the host it runs on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ("CGROUP_ROOT", "PROC_CGROUP", "available_cpus", "cgroup_cpu_limit", "memory_limit_bytes")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")

_UNLIMITED = 2**60
"""cgroup v1 reports "no limit" as a huge number (about 2**63, rounded to a page); anything this large is none."""


def available_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may run on: its affinity mask (which ``docker --cpuset-cpus`` narrows), further limited by
    a cgroup CPU quota (``docker --cpus``, Kubernetes CPU limits) rounded up; at least 1.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs the process's cgroup quota allows (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), the
    tightest along its ancestors; None without a quota.
    """
    limits: list[float] = []
    for directory in _cgroup_dirs(cgroup_root, proc_cgroup, "cpu"):
        v2 = _read(directory / "cpu.max")
        if v2 is not None:
            quota, _, period = v2.partition(" ")
            if quota != "max" and _is_number(quota) and _is_number(period) and float(period) > 0:
                limits.append(float(quota) / float(period))
        quota_us, period_us = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
        if quota_us is not None and period_us is not None and _is_number(quota_us) and _is_number(period_us):
            if float(quota_us) > 0 and float(period_us) > 0:
                limits.append(float(quota_us) / float(period_us))
    return min(limits) if limits else None


def memory_limit_bytes(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """Memory this process may use: the tightest cgroup memory limit along its cgroup's ancestors (v2
    ``memory.max``, v1 ``memory.limit_in_bytes``), never more than the machine's physical memory; None when
    neither can be read.
    """
    limits: list[int] = []
    for directory in _cgroup_dirs(cgroup_root, proc_cgroup, "memory"):
        for name in ("memory.max", "memory.limit_in_bytes"):
            value = _read(directory / name)
            if value is not None and value.isdigit() and 0 < int(value) < _UNLIMITED:
                limits.append(int(value))
    physical = _physical_memory()
    if physical is not None:
        limits.append(physical)
    return min(limits) if limits else None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not POSIX, or the value is unknown
        return None


def _cgroup_dirs(root: Path, proc_cgroup: Path, controller: str) -> Iterator[Path]:
    """The directories holding the process's limits for ``controller``: its own cgroup and each ancestor, in the
    unified (v2) hierarchy under ``root`` and in the controller's v1 hierarchy under ``root/<controller>``. Inside a
    container without a cgroup namespace the listed path may not exist; the mount's root is then the container's own
    cgroup, and is always read.
    """
    paths = {"v2": "/", "v1": "/"}
    for line in (_read(proc_cgroup) or "").splitlines():
        _id, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "":
            paths["v2"] = path or "/"
        elif controller in controllers.split(","):
            paths["v1"] = path or "/"
    seen: set[Path] = set()
    for base, path in ((root, paths["v2"]), (root / controller, paths["v1"])):
        directory = base / path.lstrip("/")
        while True:
            if directory not in seen and directory.is_dir():
                seen.add(directory)
                yield directory
            if directory == base or base not in directory.parents:
                break
            directory = directory.parent


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
