"""The checks of ``cloudeasyml doctor``: each looks at one thing a server needs, for real, and says what to do when
it is wrong. Nothing here changes anything (the artifact-directory check writes a file and removes it).
"""

from __future__ import annotations

from collections.abc import Callable

from cloudeasyml.cli.diagnostics.database import check_database, check_redis
from cloudeasyml.cli.diagnostics.findings import Context, Finding, Status
from cloudeasyml.cli.diagnostics.machine import check_artifact_dir, check_disk, check_memory
from cloudeasyml.cli.diagnostics.models import check_artifacts, check_onnxruntime, check_plugins
from cloudeasyml.settings import Settings

__all__ = ("CHECKS", "Finding", "Status", "run_checks")

CHECKS: tuple[tuple[str, Callable[[Context], list[Finding]]], ...] = (
    ("database", check_database),
    ("plugins", check_plugins),
    ("artifacts", check_artifacts),
    ("onnxruntime", check_onnxruntime),
    ("redis", check_redis),
    ("artifact_dir", check_artifact_dir),
    ("disk", check_disk),
    ("memory", check_memory),
)
"""In order: the plugins check builds the catalog the artifacts and onnxruntime checks read; the database check
counts the deployments asking for CUDA."""


def run_checks(settings: Settings, progress: Callable[[str], None] | None = None) -> list[Finding]:
    """Every check's findings, in order; a check that breaks is a failure of its own, never a crash."""
    context = Context(settings)
    findings: list[Finding] = []
    for name, check in CHECKS:
        if progress is not None:
            progress(name)
        try:
            findings.extend(check(context))
        except Exception as exc:  # a bug or a surprise in one check must not hide the others' results
            findings.append(Finding(name, "FAIL", f"the check itself failed: {type(exc).__name__}: {exc}"))
    return findings
