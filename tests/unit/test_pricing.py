"""Pricing arithmetic is exact."""

from __future__ import annotations

from decimal import Decimal

from cloudeasyml.core.pricing import CostInputs, Pricing, price
from cloudeasyml.db.types import Money


def test_cost_is_per_request_plus_time_parts_in_exact_decimals() -> None:
    pricing = Pricing(per_request=Decimal("0.0001"), per_second=Decimal("0.002"), per_gpu_hour=Decimal("3.6"))
    cost = price(pricing, CostInputs(processing_ms=250.0, gpu_ms=1000.0))
    # 0.0001 + 0.002 * 0.25 + 3.6 * (1 / 3600) = 0.0001 + 0.0005 + 0.001
    assert cost == Decimal("0.0016000000")


def test_float_noise_in_timings_does_not_leak_into_costs() -> None:
    pricing = Pricing(per_second=Decimal("1"))
    assert price(pricing, CostInputs(requests=0, processing_ms=0.1 + 0.2)) == Decimal("0.0003000000")


def test_sum_of_many_small_costs_is_exact() -> None:
    pricing = Pricing(per_request=Decimal("0.0000001"))
    total = sum((price(pricing, CostInputs()) for _ in range(10_000)), Decimal(0))
    assert total == Decimal("0.001")


def test_money_column_round_trips_exactly() -> None:
    money = Money()
    for value in (Decimal("0.0000000001"), Decimal("123456.7890123456"), Decimal(0)):
        assert money.process_result_value(money.process_bind_param(value, None), None) == value  # type: ignore[arg-type]


def test_money_column_refuses_more_places_than_it_stores() -> None:
    import pytest

    with pytest.raises(ValueError):
        Money().process_bind_param(Decimal("0.00000000001"), None)  # type: ignore[arg-type]
