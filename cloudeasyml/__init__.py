"""CloudEasyML: self-hostable, multi-tenant model serving with API keys, metering and billing.

This module is the public API for plugin authors.
"""

from __future__ import annotations

from cloudeasyml.core.pricing import Pricing
from cloudeasyml.core.principal import Principal
from cloudeasyml.core.quality import QualityMetric
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.tensors import TensorSpec
from cloudeasyml.plugins.hookspecs import RegisterModel, hookimpl
from cloudeasyml.plugins.model import ModelPlugin, TrainOptions, TrainProgress, TrainResult, Weights

__version__ = "0.1.0"

__all__ = (
    "ModelPlugin",
    "Pricing",
    "Principal",
    "QualityMetric",
    "RegisterModel",
    "ServingConfig",
    "TensorSpec",
    "TrainOptions",
    "TrainProgress",
    "TrainResult",
    "Weights",
    "__version__",
    "hookimpl",
)
