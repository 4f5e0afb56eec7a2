"""Tables and target checks, printed from the bench's results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.ceiling import CeilingResult
from bench.load import LoadResult

__all__ = ("HttpRow", "TargetCheck", "format_table", "http_table", "ceiling_table", "target_checks", "targets_table")

BARE = "bare"
TARGET_CONCURRENCY = 64
"""The issue's targets are set at this concurrency (and at 1 for housing)."""


@dataclass(frozen=True, slots=True)
class HttpRow:
    """One load cell against a server: the bare app (``model == "bare"``) or a model deployment."""

    model: str
    batching: str
    """``on``, ``off``, or ``-`` for the bare app."""
    max_batch_size: int
    instances: int
    concurrency: int
    items_per_request: int
    load: LoadResult
    adjacent_ceiling: float | None = None
    """In-process onnxruntime items/s at ``max_batch_size`` with ``instances`` runs at once, the mean of two
    measurements taken just before and just after this cell (only for the cell a target is set on)."""


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """A figure set against its target: figures, not tests; PASS or FAIL is printed, nothing fails."""

    name: str
    value: float | None
    target: float
    unit: str
    how: str

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or n/a when a cell it needs was not measured."""
        if self.value is None:
            return "n/a"
        return "PASS" if self.value >= self.target else "FAIL"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> str:
    """A plain-text table: the columns numbered in ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i in left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def ceiling_table(results: Sequence[CeilingResult]) -> str:
    """Section 1: onnxruntime in process."""
    headers = ["model", "batch", "runs x threads", "provider", "ort ms/call", "ort items/s", "full ms/call",
               "full items/s"]  # fmt: skip
    rows = [
        [r.model, str(r.batch), _runs(r.instances, r.threads), r.provider.replace("ExecutionProvider", ""),
         _ms(r.ort_ms), _num(r.ort_items_per_s), _ms(r.full_ms), _num(r.full_items_per_s)]
        for r in results
    ]  # fmt: skip
    return format_table(headers, rows, left=(0, 2, 3))


def _runs(instances: int, threads: int) -> str:
    return f"{instances} x {threads or 'auto'}"


def _bare_rate(rows: Sequence[HttpRow], concurrency: int) -> float | None:
    bare = next((r for r in rows if r.model == BARE and r.concurrency == concurrency), None)
    return bare.load.requests_per_s if bare else None


def http_table(rows: Sequence[HttpRow]) -> str:
    """Section 2: HTTP load, each model row also as a fraction of the bare endpoint at the same concurrency."""
    headers = ["target", "batching", "c", "req/s", "items/s", "p50 ms", "p99 ms", "errors", "x bare"]
    lines = []
    for r in rows:
        bare = _bare_rate(rows, r.concurrency)
        share = f"{r.load.requests_per_s / bare:.2f}" if bare else "-"
        batching = r.batching if r.model == BARE else f"{r.batching} ({r.max_batch_size}{_instances(r)})"
        lines.append([
            r.model, batching, str(r.concurrency), _num(r.load.requests_per_s),
            _num(r.load.requests_per_s * r.items_per_request), _ms(r.load.p50_ms), _ms(r.load.p99_ms),
            str(r.load.errors), share,
        ])  # fmt: skip
    return format_table(headers, lines, left=(0, 1))


def _instances(row: HttpRow) -> str:
    return f", {row.instances} inst" if row.instances > 1 else ""


def _row(rows: Sequence[HttpRow], model: str, batching: str, concurrency: int) -> HttpRow | None:
    return next((r for r in rows if (r.model, r.batching, r.concurrency) == (model, batching, concurrency)), None)


def _ceiling(ceiling: Sequence[CeilingResult], model: str, batch: int) -> CeilingResult | None:
    return next((c for c in ceiling if (c.model, c.batch) == (model, batch)), None)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def target_checks(rows: Sequence[HttpRow], ceiling: Sequence[CeilingResult], batch: int) -> list[TargetCheck]:
    """The issue's targets, from whatever cells were measured."""
    top = TARGET_CONCURRENCY
    mini_on, mini_off = _row(rows, "minilm", "on", top), _row(rows, "minilm", "off", top)
    mini_items = mini_on.load.requests_per_s * mini_on.items_per_request if mini_on else None
    mini_ort = mini_on.adjacent_ceiling if mini_on else None
    if mini_ort is None:  # no framing measurements: the ceiling of part 1
        first = _ceiling(ceiling, "minilm", batch)
        mini_ort = first.ort_items_per_s if first else None
    runs = f", {mini_on.instances} runs at once" if mini_on and mini_on.instances > 1 else ""
    checks = [
        TargetCheck(
            f"minilm server / onnxruntime, c={top}, batching on",
            _ratio(mini_items, mini_ort),
            0.85,
            "",
            f"items/s / in-process ort items/s at batch {batch}{runs}"
            + (f" ({mini_ort:,.0f}, measured before and after the cell)" if mini_ort else ""),
        ),
        TargetCheck(
            f"minilm batching on / off, c={top}",
            _ratio(mini_on and mini_on.load.requests_per_s, mini_off and mini_off.load.requests_per_s),
            3.0,
            "x",
            "req/s with batching / req/s with maxBatchSize 1",
        ),
    ]
    for concurrency in sorted({1, top}):
        housing = _row(rows, "housing", "on", concurrency)
        checks.append(
            TargetCheck(
                f"housing / bare endpoint, c={concurrency}, batching on",
                _ratio(housing and housing.load.requests_per_s, _bare_rate(rows, concurrency)),
                0.40,
                "",
                "req/s / bare Litestar req/s",
            )
        )
    return checks


def targets_table(checks: Sequence[TargetCheck]) -> str:
    """Section 3: the target checks with PASS/FAIL."""
    rows = []
    for check in checks:
        value = "-" if check.value is None else f"{check.value:.2f}{check.unit}"
        rows.append([check.name, value, f">= {check.target:g}{check.unit}", check.verdict, check.how])
    return format_table(["target check", "value", "target", "verdict", "how"], rows, left=(0, 3, 4))
