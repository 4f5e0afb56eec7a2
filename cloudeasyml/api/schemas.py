"""Wire schemas of the management API (camelCase JSON)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from cloudeasyml.core.pricing import Pricing
from cloudeasyml.core.quality import QualityMetric
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.tensors import TensorSpec
from cloudeasyml.core.traffic import TrafficRoute
from cloudeasyml.db.models import ApiKey, Deployment
from cloudeasyml.domain.deployments import traffic_of
from cloudeasyml.domain.principal import DEFAULT_KEY_SCOPES

__all__ = (
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyRead",
    "DeploymentCreate",
    "DeploymentRead",
    "Health",
    "ModelLimits",
    "ModelRead",
)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _Wire(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class Health(_Wire):
    """Liveness."""

    status: str
    timestamp: datetime
    models_loaded: int
    """Deployments loaded in this process."""
    models_installed: int


class ModelLimits(_Wire):
    """What one request to the model may hold (``docs/security.md``)."""

    max_items_per_request: int
    """Most ``inputs`` of one request; more is a 422."""
    max_batch_items: int
    """Most inputs of one run: a deployment's ``maxBatchSize`` is capped by it, and larger requests run as several."""
    max_characters_per_item: int | None
    """Text models: the longest text of one input (422 past it); null for other models."""
    max_tokens_per_item: int | None
    """Text models: tokens kept of one input (longer inputs are truncated); null for other models."""


class ModelRead(_Wire):
    """An installed model plugin."""

    name: str
    version: str
    versions: list[str]
    """The shipped version first, then versions produced by ``cloudeasyml train``."""
    description: str
    task: str
    plugin: str
    source: str
    input_schema: dict[str, Any]
    """JSON Schema of one element of a predict request's ``inputs``."""
    output_schema: dict[str, Any]
    """JSON Schema of one element of a predict response's ``predictions``."""
    example_input: Any
    pricing: Pricing
    serving: ServingConfig
    """Default serving config; a deployment may override any field."""
    limits: ModelLimits
    """Bounds on one request's work."""
    input_tensors: list[TensorSpec]
    output_tensors: list[TensorSpec]
    quality_metric: QualityMetric | None = None
    """How the experiment report scores answers against ``POST /feedback`` (``label`` for ``accuracy``, ``value``
    otherwise; ``field`` names the prediction's part compared); null: the model declares none."""


class DeploymentCreate(_Wire):
    """Body of ``POST /deployments``."""

    model_name: Name
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=63)] | None = None
    """Unique per tenant; lower-case letters, digits, ``-``, ``_``, ``.``. Generated when absent."""
    model_version: Name | None = None
    """Defaults to the shipped version."""
    config: dict[str, Any] | None = None
    """Overrides of the model's serving defaults, e.g. ``{"maxBatchSize": 64}``."""
    traffic: list[TrafficRoute] | None = None
    """Several versions at once, e.g. ``[{"modelVersion": "1.0.0", "weight": 90}, {"modelVersion": "1.1.0",
    "weight": 10}]``: the live weights sum to 100; a ``"mode": "shadow"`` route gets a copy of ``weight`` percent of
    the requests. The first live route is the deployment's ``modelVersion``. Absent: one version serves all."""


class DeploymentRead(_Wire):
    """A deployment."""

    id: uuid.UUID
    name: str
    model_name: str
    model_version: str
    config: ServingConfig
    traffic: list[TrafficRoute]
    """The versions that serve it, with their shares; one live route at weight 100 for a single version."""
    status: str
    loaded: bool
    created_at: datetime
    variant_report: dict[str, Any] | None = None
    """While loaded with ``config.variant`` ``optimized`` or ``int8``: that graph against the float one, on the
    model's example inputs and a random batch: ``parityErrorExamples``/``parityErrorRandom`` (the model's
    parity measure: max absolute difference, or 1 - cosine for embeddings), ``relativeError*``, sizes in
    bytes, and CPU load and run times in ms at batch 1 and 32. Null otherwise."""

    @classmethod
    def of(cls, row: Deployment, *, loaded: bool, variant_report: dict[str, Any] | None = None) -> DeploymentRead:
        """From a row."""
        return cls(
            id=row.id,
            name=row.name,
            model_name=row.model_name,
            model_version=row.model_version,
            config=msgspec.convert(row.config, ServingConfig),
            traffic=list(traffic_of(row)),
            status=row.status,
            loaded=loaded,
            created_at=row.created_at,
            variant_report=variant_report,
        )


class ApiKeyCreate(_Wire):
    """Body of ``POST /api-keys``."""

    name: Name
    scopes: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_KEY_SCOPES))
    expires_at: datetime | None = None
    """With a time zone; at most the calling key's expiry. Absent: the calling key's (none if it has none)."""
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    """At most the calling key's limit. Absent: the calling key's (unlimited if it has none)."""


class ApiKeyRead(_Wire):
    """A key as listed: never its secret or hash."""

    key_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rate_limit_per_minute: int | None
    created_by_key_id: str | None
    """The key that created this one (null: made by the operator, like the owner key)."""

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyRead:
        """From a row."""
        return cls(
            key_id=row.id,
            name=row.name,
            scopes=list(row.scopes),
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            rate_limit_per_minute=row.rate_limit_per_minute,
            created_by_key_id=row.created_by_key_id,
        )


class ApiKeyCreated(ApiKeyRead):
    """A new key, with the full ``key`` shown this once."""

    key: str
