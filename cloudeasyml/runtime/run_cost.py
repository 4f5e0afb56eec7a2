"""How long a batch runs, by its size: the estimate that decides whether a batch may run on the event loop."""

from __future__ import annotations

import math

__all__ = ("EXTRAPOLATE", "OUTLIER", "RunCost")

EXTRAPOLATE = 2.0
"""Sizes up to this many times the largest measured lately are estimated from the fit; larger ones are unknown."""
OUTLIER = 10.0
"""A run is recorded as at most this many times its estimate (plus 0.05 ms)."""


class RunCost:
    """Run time of a batch as a function of its size in cost units, fitted online: ``ms = fixed + per_unit * units``
    by least squares over recent runs (older runs weigh less, by ``decay`` per run).

    While every run measured had about the same size, the whole time is charged per unit (no fixed part), which
    overestimates larger batches: the safe side. ``estimate`` extrapolates the fit up to ``EXTRAPOLATE`` times the
    largest size measured lately and refuses (``inf``) anything larger, so a batch far larger than anything seen is
    run where it cannot block the loop, and measured. (Refusing every size above the largest one, as this did at
    first, sent a small MLP's batches to a thread, after gathering for them, whenever load grew them past the
    decaying maximum: one of the causes of housing at c=64 falling from ~4,600 to ~2,300 req/s. With at most
    twice the size measured, a cost that grows faster than the fit says, even quadratically, blocks the loop for at
    most four times the inline threshold, once.)

    A run that took far longer than the fit expects (its thread preempted on a busy machine) is recorded as at most
    ``OUTLIER`` times the estimate: one stall must not send every run of a cheap model to a thread for the next
    dozen runs (in a profile of housing at c=1, 389 of ~1,300 single-item runs had gone to a thread); a model
    that really became slower crosses the inline threshold within three runs.
    """

    __slots__ = ("_decay", "_largest", "_n", "_x", "_xx", "_xy", "_y")

    def __init__(self, decay: float = 0.9) -> None:
        self._decay = decay
        self._n = self._x = self._y = self._xx = self._xy = 0.0
        self._largest = 0.0

    def observe(self, units: int, elapsed_ms: float) -> None:
        """Record one run of a batch of ``units`` that took ``elapsed_ms``."""
        d = self._decay
        x = float(max(units, 1))
        expected = self.estimate(units)
        if expected != math.inf:
            elapsed_ms = min(elapsed_ms, OUTLIER * expected + 0.05)
        self._n = self._n * d + 1.0
        self._x = self._x * d + x
        self._y = self._y * d + elapsed_ms
        self._xx = self._xx * d + x * x
        self._xy = self._xy * d + x * elapsed_ms
        # The size range the fit covers shrinks back as runs of that size age (by the same decay per run).
        self._largest = max(x, self._largest * d)

    def estimate(self, units: int) -> float:
        """Estimated milliseconds of a batch of ``units``; ``inf`` when nothing is measured or it is more than
        ``EXTRAPOLATE`` times larger than every batch measured lately.
        """
        if not self._n or units > self._largest * EXTRAPOLATE:
            return math.inf
        mean_x = self._x / self._n
        mean_y = self._y / self._n
        variance = self._xx / self._n - mean_x * mean_x
        if variance <= (0.05 * mean_x) ** 2:  # one size only: no slope to fit
            return mean_y * max(units, 1) / mean_x
        per_unit = max((self._xy / self._n - mean_x * mean_y) / variance, 0.0)
        fixed = max(mean_y - per_unit * mean_x, 0.0)
        return fixed + per_unit * max(units, 1)
