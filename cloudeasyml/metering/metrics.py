"""Process-wide counters for ``GET /metrics`` (Prometheus text format). Cheap enough for the hot path:
a dict update per request, no locks (one event loop writes them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

__all__ = ("Metrics", "render")


class Metrics:
    """Counters by model and by error status."""

    def __init__(self) -> None:
        self.predictions: defaultdict[str, int] = defaultdict(int)
        self.items: defaultdict[str, int] = defaultdict(int)
        self.processing_seconds: defaultdict[str, float] = defaultdict(float)
        self.errors: defaultdict[int, int] = defaultdict(int)

    def record_success(self, model: str, items: int, processing_ms: float) -> None:
        """One billed request."""
        self.predictions[model] += 1
        self.items[model] += items
        self.processing_seconds[model] += processing_ms / 1000

    def record_error(self, status: int) -> None:
        """One request answered with an error status."""
        self.errors[status] += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(families: Iterable[tuple[str, str, str, dict[tuple[tuple[str, str], ...], float]]]) -> str:
    """Prometheus exposition text for ``(name, type, help, {labels: value})`` families."""
    lines = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples.items():
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
    return "\n".join(lines) + "\n"
