"""Wire schemas of the management API (camelCase JSON)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from cloudeasyml.core.pricing import Pricing
from cloudeasyml.core.quality import QualityMetric
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.tensors import TensorSpec
from cloudeasyml.core.traffic import TrafficRoute
from cloudeasyml.db.models import ApiKey, Deployment
from cloudeasyml.domain.deployments import traffic_of
from cloudeasyml.domain.principal import DEFAULT_KEY_SCOPES
from cloudeasyml.domain.revisions import RevisionSummary

__all__ = (
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyRead",
    "DeploymentCreate",
    "DeploymentRead",
    "DeploymentUpdate",
    "RevisionRead",
    "RollbackRequest",
    "RouteChoice",
    "Health",
    "ModelLimits",
    "ModelRead",
)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Variant = Literal["float", "optimized", "int8"]


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
    """``pending`` (not loaded in the answering process), ``loading``, ``ready`` (loaded in the answering process) or
    ``failed`` (the last load, in any process, failed: see ``statusReason``; the next request tries again)."""
    loaded: bool
    created_at: datetime
    revision: int
    """The revision it is at (1 at creation; each ``PATCH``, rollback, promote or abort adds one)."""
    status_reason: str | None = None
    """Why the last load failed, with status ``failed``; null otherwise."""
    variant_report: dict[str, Any] | None = None
    """While loaded with ``config.variant`` ``optimized`` or ``int8``: that graph against the float one, on the
    model's example inputs and a random batch: ``parityErrorExamples``/``parityErrorRandom`` (the model's
    parity measure: max absolute difference, or 1 - cosine for embeddings), ``relativeError*``, sizes in
    bytes, and CPU load and run times in ms at batch 1 and 32. Null otherwise."""

    @classmethod
    def of(
        cls,
        row: Deployment,
        *,
        loaded: bool,
        status: str,
        status_reason: str | None = None,
        variant_report: dict[str, Any] | None = None,
    ) -> DeploymentRead:
        """From a row, with its status as this process sees it."""
        return cls(
            id=row.id,
            name=row.name,
            model_name=row.model_name,
            model_version=row.model_version,
            config=msgspec.convert(row.config, ServingConfig),
            traffic=list(traffic_of(row)),
            status=status,
            loaded=loaded,
            created_at=row.created_at,
            revision=row.revision,
            status_reason=status_reason,
            variant_report=variant_report,
        )


class DeploymentUpdate(_Wire):
    """Body of ``PATCH /deployments/{id}``: what to change (absent fields stay). A change makes a new revision,
    loaded and warmed before it takes traffic; a body that changes nothing makes none.
    """

    model_version: Name | None = None
    """Serve this version alone (a split is dropped); with ``traffic``, its first live version."""
    variant: Variant | None = None
    """Short for ``config.variant``."""
    config: dict[str, Any] | None = None
    """Overrides merged onto the current config, validated as at creation, e.g. ``{"maxBatchSize": 64}``."""
    traffic: list[TrafficRoute] | None = None
    """A whole new split (as at creation), e.g. a 10 % canary: ``[{"modelVersion": "1.0.0", "weight": 90},
    {"modelVersion": "1.1.0", "weight": 10}]``."""


class RollbackRequest(_Wire):
    """Body of ``POST /deployments/{id}/rollback`` (optional)."""

    revision: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """The revision to go back to; absent: the one before the current."""


class RouteChoice(_Wire):
    """Body of ``POST /deployments/{id}/promote`` and ``/abort``: one route of the deployment's traffic."""

    model_version: Name
    variant: Variant | None = None
    """Needed only when the deployment serves that version as several variants."""


class RevisionRead(_Wire):
    """One revision of a deployment: the state it was in from ``createdAt`` until the next revision."""

    number: int
    action: Literal["create", "update", "rollback", "promote", "abort"]
    model_version: str
    config: ServingConfig
    traffic: list[TrafficRoute]
    changes: dict[str, Any]
    """What differs from the revision before: ``{"modelVersion"|"traffic": {"from", "to"}}`` and
    ``{"config": {field: {"from", "to"}}}``; empty for revision 1."""
    created_by_key_id: str | None
    """The API key that made it (null: made before revisions existed)."""
    created_at: datetime
    requests: int
    """Answered requests billed to the deployment from ``createdAt`` until the next revision (now, for the current
    one), shadow copies not counted, as written to the database (usage reaches it within the meter's flush
    interval)."""
    current: bool

    @classmethod
    def of(cls, summary: RevisionSummary, *, current: int) -> RevisionRead:
        """From a stored revision and its request count."""
        row = summary.row
        return cls(
            number=row.number,
            action=row.action,  # type: ignore[arg-type]
            model_version=row.model_version,
            config=msgspec.convert(row.config, ServingConfig),
            traffic=list(traffic_of(row)),
            changes=row.changes,
            created_by_key_id=row.created_by_key_id,
            created_at=row.created_at,
            requests=summary.requests,
            current=row.number == current,
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
