"""CloudEasyML: self-hostable, multi-tenant model serving with API keys, metering and billing.

This module is the public API for plugin authors.
"""

from __future__ import annotations

from cloudeasyml.metering.pricing import Pricing
from cloudeasyml.plugins.hookspecs import hookimpl
from cloudeasyml.plugins.model import ModelPlugin, TensorSpec, TrainOptions, TrainProgress, TrainResult, Weights
from cloudeasyml.runtime.config import ServingConfig

__version__ = "0.1.0"

__all__ = (
    "ModelPlugin",
    "Pricing",
    "ServingConfig",
    "TensorSpec",
    "TrainOptions",
    "TrainProgress",
    "TrainResult",
    "Weights",
    "__version__",
    "hookimpl",
)
