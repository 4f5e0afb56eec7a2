"""Effective prices per plan and model: the model's defaults, adjusted once by pricing plugins, then cached."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

import pluggy

from cloudeasyml.core.pricing import Pricing
from cloudeasyml.plugins.model import ModelPlugin

__all__ = ("PricingBook",)

log = logging.getLogger(__name__)


class PricingBook:
    """Asks ``cloudeasyml_adjust_pricing`` once per (plan, model, version) and remembers the answer, so no hook
    runs per request. A price ``stored(plan, model)`` gives (a stored plan's, ``/plans``) comes first; ``clear``
    forgets the answers when the stored plans change.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        *,
        batch_factor: Decimal = Decimal("0.5"),
        stored: Callable[[str, str], Pricing | None] | None = None,
    ) -> None:
        self._pm = pm
        self._stored = stored
        self._batch_factor = batch_factor
        self._prices: dict[tuple[str, str, str], Pricing] = {}
        self._batch_prices: dict[tuple[str, str, str], Pricing] = {}

    def for_batch(self, plan: str, model: ModelPlugin, version: str) -> Pricing:
        """What ``plan`` pays for one line of a batch job: the online price (``for_plan``) times the batch factor
        (``CLOUDEASYML_BATCH__PRICE_FACTOR``, half by default); each line counts as one request.
        """
        key = (plan, model.name, version)
        pricing = self._batch_prices.get(key)
        if pricing is None:
            online = self.for_plan(plan, model, version)
            factor = self._batch_factor
            pricing = self._batch_prices[key] = Pricing(
                per_request=online.per_request * factor,
                per_second=online.per_second * factor,
                per_gpu_hour=online.per_gpu_hour * factor,
            )
        return pricing

    def clear(self) -> None:
        """Forget every price worked out (the stored plans changed)."""
        self._prices = {}
        self._batch_prices = {}

    def for_plan(self, plan: str, model: ModelPlugin, version: str) -> Pricing:
        """What ``plan`` pays for ``model`` at ``version``."""
        key = (plan, model.name, version)
        pricing = self._prices.get(key)
        if pricing is None:
            stored = self._stored(plan, model.name) if self._stored is not None else None
            if stored is not None:  # a stored plan's price for the model (``/plans``) is the price, as given
                pricing = self._prices[key] = stored
                return pricing
            adjusted = self._pm.hook.cloudeasyml_adjust_pricing(model=model, plan=plan, pricing=model.pricing)
            if adjusted is not None and not isinstance(adjusted, Pricing):
                log.error("a pricing plugin returned %r for %s; using the default", adjusted, model.name)
                adjusted = None
            pricing = self._prices[key] = adjusted or model.pricing
        return pricing
