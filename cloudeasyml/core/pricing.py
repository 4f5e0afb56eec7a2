"""Prices and the arithmetic that turns measured work into a cost, in exact decimals."""

from __future__ import annotations

from decimal import Decimal

import msgspec

__all__ = ("COST_SCALE", "CostInputs", "Pricing", "price")

COST_SCALE = 10
"""Costs carry ten decimal places: enough for a per-request price of a millionth of a cent."""

_QUANTUM = Decimal(1).scaleb(-COST_SCALE)
_MS_PER_SECOND = Decimal(1000)
_MS_PER_HOUR = Decimal(3_600_000)


class Pricing(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """What one request costs: a fixed part plus parts proportional to the time it used.

    ``cost = per_request * requests + per_second * processing_s + per_gpu_hour * gpu_h``.
    """

    per_request: Decimal = Decimal(0)
    """Charged once per successful request."""
    per_second: Decimal = Decimal(0)
    """Charged per second of model processing time (the request's share of its batch)."""
    per_gpu_hour: Decimal = Decimal(0)
    """Charged per hour of GPU time (the request's share of its batch, when it ran on a GPU)."""


class CostInputs(msgspec.Struct, frozen=True):
    """The measured work of one request."""

    requests: int = 1
    processing_ms: float = 0.0
    gpu_ms: float = 0.0


def _ms(value: float) -> Decimal:
    # Timings are floats from perf_counter; microsecond resolution is all they honestly carry.
    return Decimal(repr(round(value, 3)))


def price(pricing: Pricing, work: CostInputs) -> Decimal:
    """The cost of ``work`` under ``pricing``, rounded half-even to ``COST_SCALE`` places."""
    cost = (
        pricing.per_request * work.requests
        + pricing.per_second * _ms(work.processing_ms) / _MS_PER_SECOND
        + pricing.per_gpu_hour * _ms(work.gpu_ms) / _MS_PER_HOUR
    )
    return cost.quantize(_QUANTUM)
