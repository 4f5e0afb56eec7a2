"""Doctor checks of the machine: the artifact directory (writable), free disk, and the memory budget."""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from pathlib import Path

from cloudeasyml.cli.diagnostics.findings import Context, Finding, Status
from cloudeasyml.runtime.machine import memory_limit_bytes
from cloudeasyml.services import memory_budget_bytes

__all__ = ("DISK_FAIL_BYTES", "DISK_WARN_BYTES", "check_artifact_dir", "check_disk", "check_memory")

MIB = 2**20
DISK_WARN_BYTES = 1024 * MIB
"""Less free than this where exports and the usage journal are written: a warning (one export can take hundreds of
MiB)."""
DISK_FAIL_BYTES = 100 * MIB
"""Less free than this: a failure (the journal and the next export will not fit)."""


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_artifact_dir(context: Context) -> list[Finding]:
    """The artifact directory is writable (exports and variants are written there), or can be created."""
    path = context.settings.artifact_path
    target = path if path.exists() else _nearest_existing(path)
    fix = (
        f"make {path} writable by the user running cloudeasyml ({getpass.getuser()}), or point "
        "CLOUDEASYML_RUNTIME__ARTIFACT_DIR elsewhere"
    )
    if not target.is_dir():
        return [Finding("artifact_dir", "FAIL", f"{path}: {target} is not a directory", fix)]
    try:
        # A real write, not os.access: root passes every permission check, a read-only mount does not.
        handle, name = tempfile.mkstemp(prefix=".doctor-", dir=target)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        return [Finding("artifact_dir", "FAIL", f"{path} is not writable: {exc.strerror or exc}", fix)]
    where = "writable" if target == path else f"does not exist yet; {target} is writable, so it will be created"
    return [Finding("artifact_dir", "OK", f"{path} {where}")]


def check_disk(context: Context) -> list[Finding]:
    """Free space where the server writes: the artifact store and the usage journal."""
    settings = context.settings
    paths = {_nearest_existing(settings.artifact_path), _nearest_existing(settings.journal_path)}
    found: list[Finding] = []
    for path in sorted(paths):
        free = shutil.disk_usage(path).free
        status: Status = "FAIL" if free < DISK_FAIL_BYTES else "WARN" if free < DISK_WARN_BYTES else "OK"
        fix = None if status == "OK" else f"free space on the file system of {path}, or move the directory"
        found.append(Finding("disk", status, f"{free / 2**30:.1f} GiB free at {path}", fix))
    return found


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(context: Context) -> list[Finding]:
    """The loaded models' memory budget against what the process may use and what is free now."""
    settings = context.settings
    limit = memory_limit_bytes()
    budget = memory_budget_bytes(settings, limit)
    workers = max(1, settings.server.workers)
    total = budget * workers
    knob = "CLOUDEASYML_RUNTIME__MEMORY_BUDGET_MB or __MEMORY_BUDGET_FRACTION"
    if not budget:
        return [
            Finding(
                "memory",
                "WARN",
                "no memory budget: loaded models are never unloaded to make room, and may outgrow the machine",
                f"set {knob}",
            )
        ]
    summary = f"budget {budget / MIB:.0f} MiB x {workers} worker(s)"
    if limit is not None and total > limit:
        return [
            Finding(
                "memory",
                "FAIL",
                f"{summary} is more than the {limit / MIB:.0f} MiB this process may use: it would be killed before "
                "the budget unloads anything",
                f"lower {knob}, or give the container more memory",
            )
        ]
    available = _available_memory()
    if available is not None and total > available:
        return [
            Finding(
                "memory",
                "WARN",
                f"{summary} is more than the {available / MIB:.0f} MiB free now",
                f"free memory on this machine or lower {knob}",
            )
        ]
    free = f", {available / MIB:.0f} MiB free now" if available is not None else ""
    limit_text = f" of a {limit / MIB:.0f} MiB limit" if limit is not None else ""
    return [Finding("memory", "OK", f"{summary}{limit_text}{free}")]
