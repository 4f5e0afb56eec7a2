"""mypy passes on the whole platform package with zero errors (configuration: ``[tool.mypy]`` in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_reports_no_errors_in_cloudeasyml() -> None:
    # The incremental cache (.mypy_cache, git-ignored) makes reruns take seconds; a cold run takes about a minute.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "cloudeasyml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
