"""The Python client of the CloudEasyML HTTP API (``Client``, and ``AsyncClient`` for asyncio).

It ships in the platform's wheel but imports nothing of the server (an import-linter contract in pyproject.toml
holds it to that), so it needs only httpx and msgspec::

    from cloudeasyml.client import Client

    with Client("http://127.0.0.1:8000", api_key="sk_...") as client:
        model = client.models.get("housing")
        deployment = client.deployments.create("housing")
        answer = client.predict(deployment, [model.example_input])
        print(answer.predictions, client.usage.get().total_cost)
"""

from __future__ import annotations

from cloudeasyml.client.aio import AsyncClient
from cloudeasyml.client.errors import (
    AuthError,
    CloudEasyMLError,
    ConflictError,
    ConnectionFailedError,
    InvalidInputError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitedError,
    UnavailableError,
)
from cloudeasyml.client.retry import RetryPolicy
from cloudeasyml.client.schemas import (
    ApiKey,
    ApiKeyCreated,
    Batch,
    BatchCounts,
    Deployment,
    File,
    Invoice,
    InvoiceLine,
    InvoiceSummary,
    Model,
    ModelLimits,
    ModelUsage,
    Prediction,
    Pricing,
    Quota,
    Revision,
    ServingConfig,
    TensorSpec,
    TrafficRoute,
    Usage,
    UsageRecord,
    UsageRecordPage,
)
from cloudeasyml.client.sync import Client

__all__ = (
    "ApiKey",
    "ApiKeyCreated",
    "AsyncClient",
    "AuthError",
    "Batch",
    "BatchCounts",
    "Client",
    "CloudEasyMLError",
    "ConflictError",
    "ConnectionFailedError",
    "Deployment",
    "File",
    "InvalidInputError",
    "Invoice",
    "InvoiceLine",
    "InvoiceSummary",
    "Model",
    "ModelLimits",
    "ModelUsage",
    "NotFoundError",
    "PaymentRequiredError",
    "Prediction",
    "Pricing",
    "Quota",
    "RateLimitedError",
    "RetryPolicy",
    "Revision",
    "ServingConfig",
    "TensorSpec",
    "TrafficRoute",
    "UnavailableError",
    "Usage",
    "UsageRecord",
    "UsageRecordPage",
)
